#include <stdio.h>
#include <unistd.h>

void tick(int v);
int other(void);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		tick(i);
		other();
		usleep(20000);
	}
}
