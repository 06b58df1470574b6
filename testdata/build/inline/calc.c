#include "calc.h"

static inline int scale(int v)
{
	return v * 2;
}

int area(int w, int h)
{
	int a = 0;
	for (int i = 0; i < h; i++)
		a += scale(w);
	return a;
}

int perimeter(int w, int h)
{
	int p = 0;
	for (int i = 0; i < 2; i++)
		p += scale(w) + scale(h);
	return p;
}
