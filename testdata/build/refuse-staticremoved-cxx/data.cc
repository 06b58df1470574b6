int step(int x)
{
	static int calls;
	calls++;
	return x + calls;
}
