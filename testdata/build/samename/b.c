static int factor = 2;

void set_factor_b(int f)
{
	factor = f;
}

__attribute__((noinline)) static int check(int x)
{
	return x * factor;
}

int check_b(int x)
{
	if (x < 0)
		return -1;
	if (x > 1000)
		return check(x - 1000);
	return check(x);
}
