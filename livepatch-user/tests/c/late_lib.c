/* A library that patches name before it is loaded (tests/dlopen.rs): late_f() is 100 here,
 * 200 once patched by late_patch.c. Its constructor records what late_f() returned when
 * it ran (the runtime patches a library after dlopen ran its constructors: 100). */
__attribute__((noipa)) int late_g(int x) { return x; }
__attribute__((noipa)) int late_f(void) { return late_g(100); }

int late_ctor_saw;
__attribute__((constructor)) static void late_init(void) { late_ctor_saw = late_f(); }
