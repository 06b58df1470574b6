__attribute__((noinline)) int scale_a(int x) { return x * 3; }
__attribute__((noinline)) int scale_b(int x) { return x * 5; }
