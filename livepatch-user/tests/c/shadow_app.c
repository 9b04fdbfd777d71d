/* The kernel's shadow-variable demo (samples/livepatch/livepatch-shadow-mod.c) as a process:
 * worker threads allocate "dummies" (dummy_alloc), check them (dummy_check) and release the
 * expired ones (dummy_free). dummy_alloc leaks: it allocates an extra int that nothing ever
 * frees. The patches shadow_fix1.c and shadow_fix2.c (cumulative) fix the leak with a shadow
 * variable holding the extra pointer, and fix2 counts the checks of each dummy in another.
 *
 * Built as livepatch-user/README.md says (patchable entries, frame pointers, -rdynamic,
 * linked against liblivepatch_user.so). Commands on stdin, one answer line each on stdout:
 *   stats  ->  "leaks_live L orig_leaked O released R dummies D shadowed S counted C"
 *   quit   ->  stops the workers, releases every dummy, "bye", exit 0 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "livepatch_user.h"

#define WORKERS 4
#define EXPIRE 64 /* ticks (worker iterations) */
#define SV_LEAK 1
#define SV_COUNTER 2

struct dummy {
    struct dummy *next;
    long expire;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct dummy *list;
static long dummies;
static atomic_long tick;
static atomic_int stop;
/* Leak accounting: every extra int is counted while it lives. */
static atomic_long leaks_live, orig_leaked, released;
/* Sum of the SV_COUNTER values fix2 found when it released dummies. */
atomic_long shadow_counted;

int *leak_new(void) {
    int *p = calloc(1, sizeof(int));
    if (p)
        atomic_fetch_add(&leaks_live, 1);
    return p;
}

void leak_release(int *p) {
    if (!p)
        return;
    free(p);
    atomic_fetch_sub(&leaks_live, 1);
    atomic_fetch_add(&released, 1);
}

long app_tick(void) { return atomic_load(&tick); }

/* The original functions: callers must not assume anything about them (gcc: noipa; clang,
 * which has no noipa, inlined them without noinline and the patches changed nothing). */
#ifdef __clang__
#define REPLACEABLE __attribute__((noinline))
#else
#define REPLACEABLE __attribute__((noipa))
#endif

REPLACEABLE struct dummy *dummy_alloc(void) {
    struct dummy *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->expire = app_tick() + EXPIRE;
    int *leak = leak_new(); /* the bug: never freed */
    if (leak) {
        *leak = 1;
        atomic_fetch_add(&orig_leaked, 1);
    }
    return d;
}

REPLACEABLE void dummy_free(struct dummy *d) { free(d); }

REPLACEABLE int dummy_check(struct dummy *d, long now) { return now > d->expire; }

/* Under the lock: allocate one, check all, release the expired ones. */
static void work(int cleanup) {
    pthread_mutex_lock(&lock);
    struct dummy *d = dummy_alloc();
    if (d) {
        d->next = list;
        list = d;
        dummies++;
    }
    if (cleanup) {
        long now = app_tick();
        for (struct dummy **p = &list; *p;) {
            if (dummy_check(*p, now)) {
                struct dummy *x = *p;
                *p = x->next;
                dummy_free(x);
                dummies--;
            } else {
                p = &(*p)->next;
            }
        }
    }
    pthread_mutex_unlock(&lock);
}

static void *worker(void *token) {
    LIVEPATCH_THREAD_BEGIN(token);
    for (long i = 0; !atomic_load(&stop); i++) {
        atomic_fetch_add(&tick, 1);
        work((i & 7) == 0);
        livepatch_safe_point(); /* outside every patched function: holds no shadow data */
        usleep(50);
    }
    livepatch_thread_end();
    return 0;
}

static void stats(void) {
    pthread_mutex_lock(&lock);
    long shadowed = 0;
    for (struct dummy *d = list; d; d = d->next)
        shadowed += lpu_shadow_get(d, SV_LEAK) != NULL || lpu_shadow_get(d, SV_COUNTER) != NULL;
    printf("leaks_live %ld orig_leaked %ld released %ld dummies %ld shadowed %ld counted %ld waiting %ld\n",
           atomic_load(&leaks_live), atomic_load(&orig_leaked), atomic_load(&released), dummies, shadowed,
           atomic_load(&shadow_counted), lpu_shadow_waiting());
    pthread_mutex_unlock(&lock);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2 || livepatch_init() || LIVEPATCH_THREAD_BEGIN(NULL) || livepatch_trust_object((void *)main) ||
        livepatch_serve(argv[1]))
        return 1;
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&th[i], 0, worker, livepatch_thread_prepare()))
            return 1;
    printf("ready\n");
    fflush(stdout);
    char line[64];
    for (;;) {
        /* Blocked on stdin: offline, so that shadow reclaim does not wait for this thread. */
        livepatch_thread_offline();
        char *got = fgets(line, sizeof line, stdin);
        livepatch_thread_online();
        if (!got)
            break;
        if (!strncmp(line, "stats", 5)) {
            stats();
        } else if (!strncmp(line, "quit", 4)) {
            break;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], 0);
    while (list) {
        struct dummy *d = list;
        list = d->next;
        dummy_free(d);
        dummies--;
    }
    printf("bye\n");
    fflush(stdout);
    livepatch_thread_end();
    return 0;
}
