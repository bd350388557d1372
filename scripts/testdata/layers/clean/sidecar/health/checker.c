#include "codec/h2_client.h"
#include "upstream/upool.h"
