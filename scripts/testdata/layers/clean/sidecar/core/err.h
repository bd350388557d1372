/* The bottom layer: includes nothing of the tree. */
#include <errno.h>
