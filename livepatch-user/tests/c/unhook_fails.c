/* A hook whose removal fails: sf_f and sf_g on pages of their own (a test's seccomp filter
 * refuses mprotect of sf_f's page after its first hook). -DPART_LIB: the program;
 * -DPART_P1: replaces sf_f only; -DPART_P2: replaces sf_f and sf_g (version 2). */
#include <stdatomic.h>

#ifdef PART_LIB
_Thread_local int sf_chain = -1; /* the version of the sf_f running on this thread */
static atomic_long bad;
void sf_record(int g_version) {
    if (sf_chain >= 0 && sf_chain != g_version)
        atomic_fetch_add(&bad, 1);
}
__attribute__((noipa, aligned(4096))) int sf_g(int x) {
    sf_record(0);
    return x;
}
__attribute__((noipa, aligned(4096))) int sf_f(int x) {
    int saved = sf_chain;
    sf_chain = 0;
    int r = sf_g(x);
    sf_chain = saved;
    return r;
}
long sf_bad(void) { return atomic_load(&bad); }
#endif

#if defined(PART_P1) || defined(PART_P2)
#include "livepatch_user.h"
extern _Thread_local int sf_chain;
void sf_record(int g_version);
int sf_g(int x);
#endif

#ifdef PART_P1
__attribute__((noinline)) int sf_f_v1(int x) { return x; }
static const struct livepatch_func funcs[] = {{"sf_f", (void *)sf_f_v1}};
const struct livepatch_patch livepatch_patch = {.abi = LIVEPATCH_ABI, .name = "p1", .nfuncs = 1, .funcs = funcs};
#endif

#ifdef PART_P2
__attribute__((noinline)) int sf_g_v2(int x) {
    sf_record(2);
    return x;
}
__attribute__((noinline)) int sf_f_v2(int x) {
    int saved = sf_chain;
    sf_chain = 2;
    int r = sf_g(x);
    sf_chain = saved;
    return r;
}
static const struct livepatch_func funcs[] = {{"sf_f", (void *)sf_f_v2}, {"sf_g", (void *)sf_g_v2}};
const struct livepatch_patch livepatch_patch = {.abi = LIVEPATCH_ABI, .name = "p2", .nfuncs = 2, .funcs = funcs};
#endif
