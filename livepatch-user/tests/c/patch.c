/* A patch object for the stress target: f and g of version V (1 or 2); V == 2 is cumulative
 * (replace). Built with -DV=1 or -DV=2, -fno-omit-frame-pointer, as a shared object. */
#include "livepatch_user.h"

extern _Thread_local int lp_chain;
extern _Thread_local int lp_sleepy;
void target_record(int g_version);
void target_nap(long ns);
int g(int x);

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F CAT(f_v, V)
#define G CAT(g_v, V)

__attribute__((noinline)) int G(int x) {
    target_record(V);
    if (lp_sleepy && (x & 7) == 0)
        target_nap(50000);
    return x * 3;
}

__attribute__((noinline)) int F(int x) {
    int saved = lp_chain;
    lp_chain = V;
    int r = g(x); /* the target's g: hooked, redirected by this thread's universe */
    if (lp_sleepy)
        target_nap(20000);
    r += g(x + 1);
    lp_chain = saved;
    return r;
}

static const struct livepatch_func funcs[] = {
    {"f", (void *)F},
    {"g", (void *)G},
};

const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI,
    .name = V == 1 ? "fix-v1" : "fix-v2-cumulative",
    .replace = V == 2,
    .nfuncs = 2,
    .funcs = funcs,
};
