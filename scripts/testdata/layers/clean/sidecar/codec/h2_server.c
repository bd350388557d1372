#include "codec/h2_server.h"
#include "http/stream.h"
