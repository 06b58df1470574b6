#include <stdio.h>

__attribute__((noinline)) void report(void)
{
	static int count;
	count++;
	printf("count=%d mode=old\n", count);
}
