#include <stdio.h>

/*
 * Length checks for the record parser.
 *
 * A record holds a header, a body of at most
 * seventeen bytes and a trailer.
 *
 * The parser calls check before it copies the body.
 */

int check(int len);

/* Reports whether a body of len bytes fits. */
int check(int len)
{
	return len < 18;
}
