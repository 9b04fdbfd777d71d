/* A patched thread start routine: sr_start (patchable) registers the thread it starts, then
 * calls sr_g; the patch replaces both (sr_start_v1 and sr_g_v1 record version 1). A start
 * routine is entered before its thread registers. Built with -DPART_LIB (the program) or
 * -DPART_PATCH (the patch object). */
#include <pthread.h>
#include <stdatomic.h>

#include "lp_api.h"

#ifdef PART_LIB
static struct lp_api api;
static atomic_long bad, runs, unregistered;

/* A chain of the start routine of version `start` calling sr_g of version `g`. */
void sr_record(int start, int g) {
    if (start != g)
        atomic_fetch_add(&bad, 1);
    atomic_fetch_add(&runs, 1);
}
static atomic_long begins;
/* Not a tail call: the registration's caller is this wrapper, below the start routine. */
__attribute__((noinline)) int sr_begin(void *token, const void *frame) {
    int r = api.begin(token, frame);
    atomic_fetch_add(&begins, 1);
    return r;
}
void sr_end(void) { api.end(); }
void sr_unregistered(void) { atomic_fetch_add(&unregistered, 1); }

__attribute__((noipa)) int sr_g(int x) { return 0 * x; }

__attribute__((noipa)) void *sr_start(void *token) {
    int registered = sr_begin(token, __builtin_frame_address(0)) == 0;
    if (!registered)
        sr_unregistered();
    sr_record(0, sr_g(1));
    if (registered)
        sr_end();
    return 0;
}

/* From a registered thread: starts one thread at sr_start (prepared) and joins it. */
int sr_spawn(const struct lp_api *a) {
    api = *a;
    pthread_t t;
    void *token = api.prepare();
    if (!token || pthread_create(&t, 0, sr_start, token))
        return -1;
    return pthread_join(t, 0);
}
long sr_bad(void) { return atomic_load(&bad); }
long sr_runs(void) { return atomic_load(&runs); }
long sr_unregistered_runs(void) { return atomic_load(&unregistered); }
#endif

#ifdef PART_PATCH
#include "livepatch_user.h"
void sr_record(int start, int g);
int sr_begin(void *token, const void *frame);
void sr_end(void);
void sr_unregistered(void);
int sr_g(int x);

__attribute__((noinline)) int sr_g_v1(int x) { return x; }
__attribute__((noinline)) void *sr_start_v1(void *token) {
    int registered = sr_begin(token, __builtin_frame_address(0)) == 0;
    if (!registered)
        sr_unregistered();
    sr_record(1, sr_g(1));
    if (registered)
        sr_end();
    return 0;
}
static const struct livepatch_func funcs[] = {{"sr_start", (void *)sr_start_v1}, {"sr_g", (void *)sr_g_v1}};
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI, .name = "start-routine", .nfuncs = 2, .funcs = funcs,
};
#endif
