#include "core/err.h"
#include "snapshot.h"
