/* The running binary may be built with -DALT_TABLE (a switch table with
   another constant), -DALT_MINE (another thread-local variable of this
   file), -DALT_THEIRS (another one of other.c's) or -DALT_GLOBAL (another
   global variable of other.c's): the code is the same, the data it reads is
   not. */
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

__thread int ta = 1, tb = 2;
extern __thread int ea, eb;
extern int ga, gb;

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
