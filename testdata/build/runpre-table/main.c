#include <stdio.h>
#include <unistd.h>

int say(int x);
int step(int x, int y);
int other(int x, int y);

int sink(int x)
{
	return x & 0xff;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		if (i % 1000 == 999)
			/* The linker keeps one copy of a string: calc.c's first
			   string is this one, so calc.c's others are not where
			   its section would start plus their offset. */
			printf("the value is large: %d\n", i);
		say(i % 200);
		printf("value=%d %d\n", step(i % 17, i), other(i % 14, i));
		usleep(20000);
	}
}
