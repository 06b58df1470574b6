#include <stdio.h>
#include <unistd.h>

int lookup(int i);

__attribute__((noinline)) int twice(int i)
{
	return lookup(i) * 2;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("v=%d\n", twice(i));
		usleep(20000);
	}
}
