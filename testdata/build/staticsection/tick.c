#include <stdio.h>

/* Two statics in one named section: references to them are relative to
   the section, and a store of a constant puts an immediate after the
   displacement (movl $7, x(%rip): addend -8). */
static int count __attribute__((section(".counters")));
static int resets __attribute__((section(".counters")));

__attribute__((noinline)) void report(int v)
{
	if (v == -1)
		count = 7;
	if (v == -2)
		resets = 9;
	count++;
	printf("count=%d resets=%d mode=old\n", count, resets);
}
