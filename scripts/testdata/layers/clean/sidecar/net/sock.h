#include "snapshot.h"
#include "tls/tls_ctx.h"
