/* tests/prebegin.rs: a prepared child passes through the entry padding of sr_enter, the
 * function on its way to its registration (as through its start routine's), before it
 * registers -- here over and over (sr_enter(SPIN) returns at once) until the test caught it
 * between two of the NOPs and lets it go on. Built with -DPART_LIB (the program) or
 * -DPART_PATCH (the patch object: sr_enter's first hook). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "lp_api.h"

#define SPIN ((void *)1)

#ifdef PART_LIB
static struct lp_api api;
static atomic_int go, child_tid, registered = -1;
static pthread_t child_thread;

/* Registers the calling thread with `token` (ends the registration again at once). */
__attribute__((noipa)) int sr_enter(void *token) {
    if (token == SPIN)
        return 0;
    int r = api.begin(token, __builtin_frame_address(0));
    if (r == 0)
        api.end();
    return r;
}

static void *child(void *token) {
    atomic_store(&child_tid, gettid());
    while (!atomic_load(&go))
        sr_enter(SPIN);
    atomic_store(&registered, sr_enter(token) == 0);
    return 0;
}

/* From a registered thread: prepares a child and starts it. */
int pb_spawn(const struct lp_api *a) {
    api = *a;
    void *token = api.prepare();
    if (!token || pthread_create(&child_thread, 0, child, token))
        return -1;
    return 0;
}
int pb_tid(void) { return atomic_load(&child_tid); }
void pb_go(void) { atomic_store(&go, 1); }
/* Joins the child: 1 if its registration succeeded, 0 if refused. */
int pb_join(void) {
    pthread_join(child_thread, 0);
    return atomic_load(&registered);
}
#endif

#ifdef PART_PATCH
#include "livepatch_user.h"
__attribute__((noinline)) int sr_enter_v1(void *token) { return token == SPIN ? 0 : -1; }
static const struct livepatch_func funcs[] = {{"sr_enter", (void *)sr_enter_v1}};
const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI, .name = "prebegin", .nfuncs = 1, .funcs = funcs,
};
#endif
