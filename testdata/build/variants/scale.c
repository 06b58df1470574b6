#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)

int CAT(scale, W)(int x)
{
	return x * W + 1;
}
