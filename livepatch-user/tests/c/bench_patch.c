/* A patch for the benchmarks: replaces target_hooked with an identical variant. */
#include "livepatch_user.h"

__attribute__((noinline)) int target_hooked_v1(int x) { return x + 1; }

static const struct livepatch_func funcs[] = {{"target_hooked", (void *)target_hooked_v1}};

const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI,
    .name = "bench",
    .nfuncs = 1,
    .funcs = funcs,
};
