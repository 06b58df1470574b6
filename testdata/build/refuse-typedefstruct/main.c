#include <stdio.h>
#include <unistd.h>

int step(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("step=%d\n", step(i));
		usleep(20000);
	}
}
