#include <cstdio>
#include <stdexcept>
#include <string>

__attribute__((noinline)) void validate(int x)
{
	if (x % 5 == 0)
		throw std::runtime_error("bad input " + std::to_string(x));
}

// parse lets validate's exception pass through it.
int parse(int x)
{
	validate(x);
	return x * 2;
}
