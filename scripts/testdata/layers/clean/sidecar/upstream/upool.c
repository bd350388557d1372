#include "upstream/upool.h"
/* downward: allowed */
#include "codec/h2_client.h"
