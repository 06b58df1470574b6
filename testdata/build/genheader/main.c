#include <stdio.h>
#include <unistd.h>
#include "gen.h"

int offset(void);

__attribute__((noinline)) int compute(int x)
{
	return x * SCALE + offset();
}

int main(void)
{
	for (;;) {
		printf("compute(2) = %d\n", compute(2));
		fflush(stdout);
		sleep(1);
	}
}
