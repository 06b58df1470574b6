static int base = 1000;

__attribute__((noinline)) static int offset(int x)
{
	return x + base;
}

int lib_compute(int x)
{
	int r = 0;
	for (int i = 0; i < x; i++)
		r += offset(i) - base;
	return r + offset(0);
}
