/* unit tests may reach across to build their fixtures */
#include "loop/worker.h"
#include "router/router.h"
#include "upstream/upool.h"
