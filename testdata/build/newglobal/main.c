#include <stdio.h>
#include <unistd.h>
#include "compute.h"

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("value=%d\n", compute(21));
		usleep(20000);
	}
}
