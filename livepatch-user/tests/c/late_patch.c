/* A patch of liblate.so's late_f (tests/dlopen.rs). With -DMISSING it also names a function
 * the library does not have: the library's coming is refused and nothing of it is patched.
 * With -DHOLD it also patches late_app.c's hold_here(). With -DGLOBAL it names late_f without its library (found in the global scope). */
#include "livepatch_user.h"

int late_f_fixed(void) { return 200; }
#ifdef MISSING
int late_missing_fixed(void) { return 300; }
static const struct livepatch_func funcs[] = {
    {"late_f", (void *)late_f_fixed, "liblate.so"},
    {"late_missing", (void *)late_missing_fixed, "liblate.so"},
};
#define NAME "late-missing"
#elif defined HOLD
/* Also hold_here() of late_app.c, which a thread sits in: the transition stays open. */
void hold_here_fixed(void) {}
static const struct livepatch_func funcs[] = {
    {"late_f", (void *)late_f_fixed, "liblate.so"},
    {"hold_here", (void *)hold_here_fixed, 0},
};
#define NAME "late-hold"
#elif defined GLOBAL
/* late_f found in the global scope (the library loaded RTLD_GLOBAL), not by library name. */
static const struct livepatch_func funcs[] = {{"late_f", (void *)late_f_fixed, 0}};
#define NAME "late-global"
#else
static const struct livepatch_func funcs[] = {{"late_f", (void *)late_f_fixed, "liblate.so"}};
#define NAME "late-fix"
#endif
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI, .name = NAME, .nfuncs = sizeof funcs / sizeof funcs[0], .funcs = funcs};
