extern int limit_a, limit_b;

/* The running library may be built with -DALT: it reads limit_b. */
#ifdef ALT
#define LIMIT limit_b
#else
#define LIMIT limit_a
#endif

int clamp(int x)
{
	return x > LIMIT ? LIMIT : x;
}
