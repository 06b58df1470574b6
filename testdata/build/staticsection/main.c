#include <stdio.h>
#include <unistd.h>

void report(int v);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		report(i);
		usleep(20000);
	}
}
