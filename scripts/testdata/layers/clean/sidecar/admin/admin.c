#include "loop/worker.h"
#include "discovery/dns.h"
#include "health/checker.h"
