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
	return check(x);
}
