#include "codec/h2_server.h"
