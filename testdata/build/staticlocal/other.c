/* Another function-scope static of the same name, in another file. */
__attribute__((noinline)) int other(void)
{
	static int count = 100;
	return ++count;
}
