static inline int bias(int x)
{
	return x + 1;
}

int area(int x);
