static int limit = 10;

int step(int x)
{
	return x > limit ? limit : x;
}

void set_limit(int l)
{
	limit = l;
}
