#include <stdio.h>
#include <unistd.h>

int check_a(int);
int check_b(int);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("a=%d b=%d\n", check_a(1), check_b(1));
		usleep(20000);
	}
}
