#include "compute.h"

int calls;

int compute(int x)
{
	calls++;
	return x + 1;
}
