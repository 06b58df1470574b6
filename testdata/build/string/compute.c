#include <stdio.h>
#include "compute.h"

void greet(int n)
{
	printf("hello number %d\n", n);
}
