#include "counter.h"

int Counter::advance()
{
	value_ += step_;
	return value_;
}

std::string Counter::label() const
{
	return "counter v1";
}
