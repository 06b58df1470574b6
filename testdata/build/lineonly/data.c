#include <assert.h>

int helper(int x)
{
	assert(x >= 0);
	return x + 7;
}

int step(int x)
{
	return helper(x) * 2;
}
