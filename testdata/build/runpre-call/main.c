#include <stdio.h>
#include <unistd.h>

int compute(int x);
int stamp(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("value=%d %d\n", compute(i), stamp(i) > 0);
		usleep(20000);
	}
}
