#include <stdio.h>
#include <unistd.h>

void report(void);
int other(void);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		report();
		other();
		usleep(20000);
	}
}
