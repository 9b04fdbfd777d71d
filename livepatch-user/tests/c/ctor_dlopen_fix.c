/* app.c's fix again, from a patch object whose constructor loads a library with dlopen (a
 * helper it prepares for itself): the constructor runs inside the runtime's apply, and the
 * program's dlopen is the runtime's interposer. */
#include <dlfcn.h>
#include "livepatch_user.h"

static void *helper;
#ifdef IN_POST_PATCH /* the same from the patch's post_patch callback */
static void load_helper(void) { helper = dlopen("libm.so.6", RTLD_NOW); }
#else
__attribute__((constructor)) static void load_helper(void) { helper = dlopen("libm.so.6", RTLD_NOW); }
#endif

int answer_fixed(void) { return 2; }

static const struct livepatch_func funcs[] = {{"answer", (void *)answer_fixed}};

const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI,
    .name = "fix-answer",
    .nfuncs = 1,
    .funcs = funcs,
#ifdef IN_POST_PATCH
    .post_patch = load_helper,
#endif
};
