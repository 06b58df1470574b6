#include <unistd.h>

int scale_a(int x);
int scale_b(int x);

/* The running binary may be built with -DALT (it calls scale_b) or
   -DALT_LIB (it calls getppid through the PLT). */
#ifdef ALT
#define SCALE scale_b
#else
#define SCALE scale_a
#endif
#ifdef ALT_LIB
#define ID getppid
#else
#define ID getpid
#endif

int compute(int x)
{
	return SCALE(x) + 1;
}

int stamp(int x)
{
	return (int)ID() * 2 + x;
}
