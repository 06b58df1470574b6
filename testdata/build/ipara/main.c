#include <stdio.h>
#include <unistd.h>

int total(int x);
int scaled(int x);
int total2(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("value=%d %d %d\n", total(i % 3), scaled(i % 5), total2(i % 7));
		usleep(20000);
	}
}
