__thread int ea = 3, eb = 4;
int ga = 5, gb = 6;
