#include <stdio.h>
#include <unistd.h>

int lib_compute(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("lib=%d\n", lib_compute(3));
		usleep(20000);
	}
}
