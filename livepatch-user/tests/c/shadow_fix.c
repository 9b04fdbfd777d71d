/* The kernel's livepatch-shadow-fix1.c (FIX == 1) and livepatch-shadow-fix2.c (FIX == 2,
 * cumulative here: it replaces fix1 and carries its leak fix) for shadow_app.c.
 *
 * fix1: dummy_alloc attaches an SV_LEAK shadow variable holding the extra pointer;
 *       dummy_free frees it (the destructor releases the int). Dummies allocated before the
 *       patch (or by a thread still in the old universe) have none: they stay leaked.
 * fix2: the same, and dummy_check counts each dummy's checks in an SV_COUNTER variable
 *       attached on first use (get_or_alloc: in-flight dummies get one too); dummy_free
 *       adds the final count to the program's shadow_counted and frees it.
 * post_unpatch (unloading): free_all of the patch's ids, as the kernel modules' exit does.
 * Shadow variables of fix1 live on under fix2 (a replaced patch's callbacks do not run). */
#include <errno.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "livepatch_user.h"

#define SV_LEAK 1
#define SV_COUNTER 2
#define EXPIRE 64

struct dummy {
    struct dummy *next;
    long expire;
};

int *leak_new(void);
void leak_release(int *p);
long app_tick(void);
extern atomic_long shadow_counted;

static int shadow_leak_ctor(void *obj, void *shadow_data, void *ctor_data) {
    (void)obj;
    int **shadow_leak = shadow_data;
    int **leak = ctor_data;
    if (!ctor_data)
        return -EINVAL;
    *shadow_leak = *leak;
    return 0;
}

static void shadow_leak_dtor(void *obj, void *shadow_data) {
    (void)obj;
    leak_release(*(int **)shadow_data);
}

struct dummy *dummy_alloc_fixed(void) {
    struct dummy *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->expire = app_tick() + EXPIRE;
    int *leak = leak_new();
    if (!leak)
        goto err_leak;
    /* A new dummy has no shadow variables: any found are stale, left by a dummy at this
     * address that a thread still running the original dummy_free (mid-transition, or fix1's
     * under fix2) released without knowing about them. */
    if (lpu_shadow_get(d, SV_LEAK))
        lpu_shadow_free(d, SV_LEAK, shadow_leak_dtor);
    if (lpu_shadow_get(d, SV_COUNTER))
        lpu_shadow_free(d, SV_COUNTER, NULL);
    int **shadow_leak;
    if (lpu_shadow_alloc(d, SV_LEAK, sizeof(leak), shadow_leak_ctor, &leak, (void **)&shadow_leak))
        goto err_shadow;
    return d;
err_shadow:
    leak_release(leak);
err_leak:
    free(d);
    return NULL;
}

void dummy_free_fixed(struct dummy *d) {
    if (lpu_shadow_get(d, SV_LEAK))
        lpu_shadow_free(d, SV_LEAK, shadow_leak_dtor);
#if FIX == 2
    int *count = lpu_shadow_get(d, SV_COUNTER);
    if (count) {
        atomic_fetch_add(&shadow_counted, *count);
        lpu_shadow_free(d, SV_COUNTER, NULL);
    }
#endif
    free(d);
}

#if FIX == 2
int dummy_check_fixed(struct dummy *d, long now) {
    int *count;
    if (lpu_shadow_get_or_alloc(d, SV_COUNTER, sizeof(*count), NULL, NULL, (void **)&count) == 0)
        *count += 1;
    return now > d->expire;
}
#endif

static void post_unpatch(void) {
    lpu_shadow_free_all(SV_LEAK, shadow_leak_dtor);
#if FIX == 2
    lpu_shadow_free_all(SV_COUNTER, NULL);
#endif
}

static const struct livepatch_func funcs[] = {
    {"dummy_alloc", (void *)dummy_alloc_fixed},
    {"dummy_free", (void *)dummy_free_fixed},
#if FIX == 2
    {"dummy_check", (void *)dummy_check_fixed},
#endif
};

const struct livepatch_patch livepatch_patch = {
    .abi = LIVEPATCH_ABI,
    .name = FIX == 1 ? "shadow-fix1" : "shadow-fix2",
    .replace = FIX == 2,
    .nfuncs = sizeof funcs / sizeof funcs[0],
    .funcs = funcs,
    .post_unpatch = post_unpatch,
};
