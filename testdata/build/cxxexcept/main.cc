#include <cstdio>
#include <stdexcept>
#include <unistd.h>

int parse(int x);

int main()
{
	setvbuf(stdout, nullptr, _IOLBF, 0);
	for (int i = 1;; i++) {
		try {
			std::printf("parsed=%d\n", parse(i));
		} catch (const std::exception &e) {
			std::printf("caught: %s\n", e.what());
		}
		usleep(20000);
	}
}
