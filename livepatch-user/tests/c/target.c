/* The stress target: worker threads call f -> g chains (f calls g twice, with a nap between
 * for sleepy threads), spin, nap inside patched functions, and create short-lived threads.
 * Every g variant records (thread, version) and checks that the f running on its thread is
 * of the same version: "new f with old g" (or the reverse) in one chain counts as bad.
 * Built with -fpatchable-function-entry=16 -fno-omit-frame-pointer. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "lp_api.h"
static struct lp_api api;

_Thread_local int lp_chain = -1; /* version of the f running on this thread, -1: none */
_Thread_local int lp_sleepy;     /* this thread naps inside patched functions */
static _Thread_local int lp_hold; /* this thread waits inside g until released */
static atomic_int hold_release, holding;
static _Thread_local int lp_rec; /* this thread's record */

#define VERSIONS 3
#define RECORDS 64
static atomic_long calls[RECORDS][VERSIONS];
static atomic_long bad, bad_detail;
static atomic_int stop, next_rec, running;

void target_record(int g_version) {
    int f = lp_chain;
    if (f >= 0 && f != g_version) {
        atomic_fetch_add(&bad, 1);
        atomic_store(&bad_detail, f * 16 + g_version);
    }
    atomic_fetch_add_explicit(&calls[lp_rec][g_version], 1, memory_order_relaxed);
}

void target_nap(long ns) {
    struct timespec ts = {0, ns};
    /* nanosleep is never restarted by SA_RESTART: a kick interrupts it with EINTR. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

__attribute__((noinline)) int g(int x) {
    target_record(0);
    if (lp_hold) {
        atomic_store(&holding, 1);
        while (!atomic_load(&hold_release))
            target_nap(100000);
    }
    if (lp_sleepy && (x & 7) == 0)
        target_nap(50000);
    return x * 3;
}

__attribute__((noinline)) int f(int x) {
    int saved = lp_chain;
    lp_chain = 0;
    int r = g(x);
    if (lp_sleepy)
        target_nap(20000);
    r += g(x + 1);
    lp_chain = saved;
    return r;
}

static void join_in(void) {
    lp_rec = atomic_fetch_add(&next_rec, 1) % RECORDS;
}

static void *busy(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    join_in();
    for (long i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
        f((int)i);
        if ((i & 63) == 0)
            api.safe_point();
    }
    api.end();
    return 0;
}

static void *sleepy(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    join_in();
    lp_sleepy = 1;
    for (long i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++)
        f((int)i);
    api.end();
    return 0;
}

static void *spinner(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    join_in();
    for (long i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
        for (volatile int k = 0; k < 200000; k++) {
        }
        f((int)i);
    }
    api.end();
    return 0;
}

static void *short_lived(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    join_in();
    for (int i = 0; i < 64; i++)
        f(i);
    api.end();
    return 0;
}

/* Calls f once, held inside the original g (f and g on its stack) until released. */
static void *holder(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    join_in();
    lp_hold = 1;
    f(0);
    lp_hold = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        target_nap(100000);
    api.end();
    return 0;
}

static pthread_t holder_thread;

/* Starts a thread that stays inside f -> g until `target_release_holder`; called from a
 * registered thread (it prepares the child). Returns once the thread is inside g. */
int target_start_holder(void) {
    atomic_store(&hold_release, 0);
    atomic_store(&holding, 0);
    void *t = api.prepare();
    if (!t || pthread_create(&holder_thread, 0, holder, t) != 0)
        return -1;
    while (!atomic_load(&holding))
        target_nap(100000);
    return 0;
}

void target_release_holder(void) { atomic_store(&hold_release, 1); }

static void *churner(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    join_in();
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        void *t = api.prepare();
        pthread_t th;
        if (t && pthread_create(&th, 0, short_lived, t) == 0)
            pthread_join(th, 0);
        f(1);
    }
    api.end();
    return 0;
}

static int counts[4];
static pthread_t root_thread;

/* The root thread registers itself, then creates every worker through prepare/begin. */
static void *root(void *unused) {
    (void)unused;
    if (api.begin(0, __builtin_frame_address(0)))
        return (void *)1;
    void *(*kinds[4])(void *) = {busy, sleepy, spinner, churner};
    pthread_t th[64];
    int n = 0;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < counts[k] && n < 64; i++) {
            void *t = api.prepare();
            if (t && pthread_create(&th[n], 0, kinds[k], t) == 0)
                n++;
        }
    atomic_store(&running, n);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], 0);
    api.end();
    return 0;
}

/* Starts the workers: `busy`, `sleepy`, `spin` and `churn` threads of each kind. */
int target_start(const struct lp_api *a, int busy_n, int sleepy_n, int spin_n, int churn_n) {
    api = *a;
    counts[0] = busy_n;
    counts[1] = sleepy_n;
    counts[2] = spin_n;
    counts[3] = churn_n;
    atomic_store(&stop, 0);
    atomic_store(&running, 0);
    return pthread_create(&root_thread, 0, root, 0);
}

int target_running(void) { return atomic_load(&running); }

void target_stop(void) {
    atomic_store(&stop, 1);
    atomic_store(&hold_release, 1);
    pthread_join(root_thread, 0);
    if (holder_thread)
        pthread_join(holder_thread, 0);
}

long target_bad(void) { return atomic_load(&bad); }
long target_bad_detail(void) { return atomic_load(&bad_detail); }
long target_calls(int record, int version) { return atomic_load(&calls[record][version]); }

/* A plain call and a hooked call, for the benchmarks. */
__attribute__((noinline)) int target_plain(int x) { return x + 1; }
__attribute__((noinline)) int target_hooked(int x) { return x + 1; }
int target_loop(int (*fn)(int), int n) {
    int s = 0;
    for (int i = 0; i < n; i++)
        s += fn(i);
    return s;
}
