/* A patch whose second variant lives in another object than its first: a helper library the
 * patch object links against, which nothing declares built with frame pointers (trusted).
 * Built three times: -DPART_LIB (the program's functions uf/ug, patchable entries),
 * -DPART_HELPER (libvhelp.so: vh_g, the variant of ug, can hold its thread inside),
 * -DPART_PATCH (the patch: uf -> uf_v1 in the patch object, ug -> vh_g in the helper). */
#include <stdatomic.h>
#include <time.h>

#ifdef PART_LIB
__attribute__((noipa)) int uf(int x) { return x + 1; }
__attribute__((noipa)) int ug(int x) { return x * 3; }
#endif

#ifdef PART_HELPER
atomic_int vh_hold, vh_inside;
__attribute__((noinline)) int vh_g(int x) {
    if (atomic_load(&vh_hold)) {
        atomic_store(&vh_inside, 1);
        while (atomic_load(&vh_hold)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, 0);
        }
        atomic_store(&vh_inside, 0);
    }
    return x * 3 + 1000;
}
#endif

#ifdef PART_PATCH
#include "livepatch_user.h"
int vh_g(int x);
__attribute__((noinline)) int uf_v1(int x) { return x + 1; }
static const struct livepatch_func funcs[] = {{"uf", (void *)uf_v1}, {"ug", (void *)vh_g}};
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI, .name = "untrusted-variant", .nfuncs = 2, .funcs = funcs,
};
#endif
