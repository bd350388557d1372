#include "http/stream.h"
#include "net/sock.h"
