#include "upstream/upool.h"
