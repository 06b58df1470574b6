#include <stdio.h>

/* Another function-scope static of the same name. */
__attribute__((noinline)) int other(void)
{
	static int count = 100;
	return ++count;
}

void report(int v)
{
	static int count;
	if (v < 0)
		return;
	count++;
	printf("count=%d mode=old\n", count);
}

__attribute__((noinline)) void tick(int v)
{
	report(v);
	report(v + 1);
}
