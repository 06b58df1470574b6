#include "version.h"

int offset(void)
{
	return VERSION;
}
