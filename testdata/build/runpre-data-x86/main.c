#include <stdio.h>
#include <unistd.h>

int pick(int x);
int mine(int x);
int theirs(int x);
int global(int x);
int stat(int x);
void bump(int x);

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		bump(i);
		printf("value=%d %d %d %d %d\n", pick(i % 8), mine(i), theirs(i), global(i), stat(i));
		usleep(20000);
	}
}
