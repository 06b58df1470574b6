#include <stdlib.h>

struct req {
	int a;
	int b;
};

struct req *make(void)
{
	return calloc(1, sizeof(struct req));
}

int handle(struct req *r)
{
	return r->a - r->b;
}

/* handle is also inlined here, so its out-of-line copy is a concrete
   instance of an abstract one in the debug information. */
int twice(void *p)
{
	return handle(p) * 2;
}
