/* A patch of liblate.so's late_f (tests/dlopen.rs). With -DMISSING it also names a function
 * the library does not have: the library's coming is refused and nothing of it is patched. */
#include "livepatch_user.h"

int late_f_fixed(void) { return 200; }
#ifdef MISSING
int late_missing_fixed(void) { return 300; }
static const struct livepatch_func funcs[] = {
    {"late_f", (void *)late_f_fixed, "liblate.so"},
    {"late_missing", (void *)late_missing_fixed, "liblate.so"},
};
#define NAME "late-missing"
#else
static const struct livepatch_func funcs[] = {{"late_f", (void *)late_f_fixed, "liblate.so"}};
#define NAME "late-fix"
#endif
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI, .name = NAME, .nfuncs = sizeof funcs / sizeof funcs[0], .funcs = funcs};
