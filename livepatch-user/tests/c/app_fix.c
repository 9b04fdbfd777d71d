/* The operator's fix for app.c's answer(). */
#include "livepatch_user.h"

int answer_fixed(void) { return 2; }

static const struct livepatch_func funcs[] = {{"answer", (void *)answer_fixed}};

const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI,
    .name = "fix-answer",
    .nfuncs = 1,
    .funcs = funcs,
};
