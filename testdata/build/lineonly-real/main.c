#include <stdio.h>
#include <unistd.h>

int check(int len);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("fits=%d\n", check(18));
		usleep(20000);
	}
}
