#include "loop/worker.h"
#include "codec/h2_server.h"
#include "router/router.h"
#include "net/sock.h"
