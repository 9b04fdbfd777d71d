/* A patch refused at apply: it names a function of a library (registered as one of the
 * runtime's objects while the descriptor is read), then a process function that does not
 * exist. */
#include "livepatch_user.h"
int refused_variant(int x) { return x; }
static const struct livepatch_func funcs[] = {
    {"lib_function", (void *)refused_variant, "libnot_loaded_anywhere.so"},
    {"lp_no_such_function_anywhere", (void *)refused_variant, 0},
};
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI, .name = "refused", .nfuncs = 2, .funcs = funcs,
};
