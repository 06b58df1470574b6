#include <stdio.h>
#include <unistd.h>

struct req;
struct req *make(void);
int handle(struct req *r);
int twice(void *p);

int main(void)
{
	struct req *r = make();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("handle=%d %d\n", handle(r), twice(r));
		usleep(20000);
	}
}
