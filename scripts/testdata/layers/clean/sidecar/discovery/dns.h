/* a peer on the same layer */
#include "upstream/upool.h"
