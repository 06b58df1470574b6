#include <stdio.h>
#include <unistd.h>
#include "calc.h"

__attribute__((noinline)) int perimeter(int x)
{
	return bias(x) * 4;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("area=%d perimeter=%d\n", area(i), perimeter(i));
		usleep(20000);
	}
}
