/* The reverse: get2() needs one register more with section anchors (the
   anchor's page and its address) than without, so the analysis compile's
   total2() keeps a value in a register the target's get2() writes. */
static int a = 1, b = 2, c = 3, d = 4;

__attribute__((noinline)) static int get2(int x)
{
	return a * x + b * c - d;
}

int total2(int x)
{
	int y = x * 7 + a;
	int z = x * 9 - b;
	int r = get2(x);
	return r + y * z;
}

void set2(int v)
{
	a = v;
	b = v + 1;
	c = v + 2;
	d = v + 3;
}
