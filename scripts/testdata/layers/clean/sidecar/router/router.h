#include "http/stream.h"
