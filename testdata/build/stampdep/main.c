#include <stdio.h>
#include <unistd.h>
int dep_value(void);
__attribute__((noipa)) int compute(int x) { return x * 2; }
__attribute__((noipa)) int spare(int x) { return x; }
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("value=%d dep=%d\n", compute(21), dep_value());
		usleep(10000);
	}
}
