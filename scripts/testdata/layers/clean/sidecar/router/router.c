#include "router/router.h"
#include "filter/rbac.h"
#include "upstream/upool.h"
