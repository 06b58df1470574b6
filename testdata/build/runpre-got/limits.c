int limit_a = 10;
int limit_b = 20;
