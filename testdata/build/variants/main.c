#include <stdio.h>
#include <unistd.h>

int scale_8(int x);
int scale_16(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("scale=%d,%d\n", scale_8(1), scale_16(1));
		usleep(20000);
	}
}
