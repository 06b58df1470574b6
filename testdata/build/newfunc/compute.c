#include "compute.h"

int compute(int x)
{
	int r = 0;
	for (int i = 0; i < x; i++)
		r += i % 3;
	return r;
}
