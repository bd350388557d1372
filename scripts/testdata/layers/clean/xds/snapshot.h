#include "core/err.h"
#include "tls/tls_ctx.h"
/* generated at build time: not in the tree, not an edge */
#include "mesh/v1/bundle.pb-c.h"
