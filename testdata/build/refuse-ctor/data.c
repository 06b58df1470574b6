static int base;

__attribute__((constructor)) static void init(void)
{
	base = 100;
}

int step(int x)
{
	return base + x;
}
