#include <cstdio>
#include <unistd.h>
#include "counter.h"

int main()
{
	setvbuf(stdout, nullptr, _IOLBF, 0);
	Counter c(1);
	for (;;) {
		int v = c.advance();
		std::printf("%s value=%d\n", c.label().c_str(), v);
		usleep(20000);
	}
}
