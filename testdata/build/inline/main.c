#include <stdio.h>
#include <unistd.h>
#include "calc.h"

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("area=%d perimeter=%d\n", area(3, 4), perimeter(3, 4));
		usleep(20000);
	}
}
