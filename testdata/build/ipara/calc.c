/* IPA-RA: gcc compiles total() knowing which call-clobbered registers
   get() writes, and keeps values in the others across the call; the same
   for scaled() and leaf(). On aarch64, get() reaches its statics through
   one section anchor in the build's own compile and through one ADRP per
   variable in the analysis compile, which needs more registers. */
static int a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8;

__attribute__((noinline)) static int get(int x)
{
	a += x; b += a; c += b; d += c; e += d; f += e; g += f; h += g;
	return h;
}

int total(int x)
{
	int y = x * 7 + a;
	int z = x * 9 - b;
	int w = x * 11 + c;
	int r = get(x);
	return r + y * z + w;
}

__attribute__((noinline)) static int leaf(int x)
{
	return x * 3 + 1;
}

int scaled(int x)
{
	int y = x * 7 + 2;
	int z = x * 9 - 4;
	int r = leaf(x);
	return r + y * z;
}
