#include <stdio.h>
#include <unistd.h>

int clamp(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("clamp=%d\n", clamp(i % 30));
		usleep(20000);
	}
}
