#include "loop/worker.h"
#include "snapshot.h"
