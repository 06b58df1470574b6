/* The running binary may be built with -DALT_STRING (another second
   string, not the first of its section), -DALT_CASES (cases 16 and 17
   share the code of cases 4 and 3 instead of 3 and 4: the same code,
   another jump table) or with other alignment flags (-falign-labels: the
   same code with more padding, so jump-table entries that differ). */
#include <stdio.h>

#ifdef ALT_STRING
#define SECOND "the value is small!"
#else
#define SECOND "the value is small."
#endif
#ifdef ALT_CASES
#define C3 3: case 17
#define C4 4: case 16
#else
#define C3 3: case 16
#define C4 4: case 17
#endif

extern int sink(int);

int say(int x)
{
	if (x > 100)
		return printf("the value is large: %d\n", x);
	return puts(SECOND);
}

int step(int x, int y)
{
	int r;
	switch (x) {
	case 0: r = sink(y * 3) + 1; break;
	case 1: r = sink(y + 7) - 2; break;
	case 2: r = sink(y ^ 5) * 3; break;
	case C3: r = sink(y * 11) + 4; break;
	case C4: r = sink(y - 13) * 5; break;
	case 5: r = sink(y | 17) + 6; break;
	case 6: r = sink(y * 19) - 7; break;
	case 7: r = sink(y + 23) * 8; break;
	case 8: r = sink(y & 29) + 9; break;
	case 9: r = sink(y * 31) - 10; break;
	case 10: r = sink(y + 37) * 11; break;
	case 11: r = sink(y ^ 41) + 12; break;
	case 12: r = sink(y * 43) - 13; break;
	case 13: r = sink(y + 47) * 14; break;
	case 14: r = sink(y | 53) + 15; break;
	case 15: for (r = 0; r < y; r++) sink(r); break;
	default: r = -1;
	}
	return r;
}

/* Not changed by the fix, with a jump table of its own next to step's. */
int other(int x, int y)
{
	int r;
	switch (x) {
	case 0: r = sink(y * 2) + 1; break;
	case 1: r = sink(y + 3) - 2; break;
	case 2: r = sink(y ^ 4) * 3; break;
	case 3: r = sink(y * 5) + 4; break;
	case 4: r = sink(y - 6) * 5; break;
	case 5: r = sink(y | 7) + 6; break;
	case 6: r = sink(y * 8) - 7; break;
	case 7: r = sink(y + 9) * 8; break;
	case 8: r = sink(y & 10) + 9; break;
	case 9: r = sink(y * 11) - 10; break;
	case 10: r = sink(y + 12) * 11; break;
	case 11: r = sink(y ^ 13) + 12; break;
	case 12: for (r = 0; r < y; r++) sink(r + 1); break;
	default: r = -2;
	}
	return r;
}
