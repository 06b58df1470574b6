__attribute__((noipa)) int dep_value(void) { return 7; }
__attribute__((noipa)) int dep_spare(void) { return 0; }
