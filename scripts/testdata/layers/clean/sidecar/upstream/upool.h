#include "http/stream.h"
#include "snapshot.h"
