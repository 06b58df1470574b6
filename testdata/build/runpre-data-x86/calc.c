/* x86-64 counterpart of runpre-data: the running binary may be built with
   -DALT_TABLE (a switch table with another constant), -DALT_MINE (another
   thread-local variable of this file), -DALT_THEIRS (another one of
   other.c's), -DALT_GLOBAL (another global variable of other.c's) or
   -DALT_STATIC (the two static thread-local variables swapped): the code
   is the same, the data it reads is not. */
#ifdef ALT_TABLE
#define FIRST 12
#else
#define FIRST 11
#endif
#ifdef ALT_MINE
#define MINE tb
#else
#define MINE ta
#endif
#ifdef ALT_THEIRS
#define THEIRS eb
#else
#define THEIRS ea
#endif
#ifdef ALT_GLOBAL
#define GLOBAL gb
#else
#define GLOBAL ga
#endif
#ifdef ALT_STATIC
#define S1 sb
#define S2 sa
#else
#define S1 sa
#define S2 sb
#endif

__thread int ta = 1, tb = 2;
extern __thread int ea, eb;
extern int ga, gb;
static __thread int sa = 7, sb = 7;

int pick(int x)
{
	switch (x) {
	case 0: return FIRST;
	case 1: return 23;
	case 2: return 37;
	case 3: return 41;
	case 4: return 59;
	case 5: return 61;
	default: return 0;
	}
}

int mine(int x)
{
	return MINE + x;
}

int theirs(int x)
{
	return THEIRS + x;
}

int global(int x)
{
	return GLOBAL + x;
}

int stat(int x)
{
	S1 += x;
	return S1 * 3 + S2;
}

void bump(int x)
{
	sa += x;
	sb -= x;
}
