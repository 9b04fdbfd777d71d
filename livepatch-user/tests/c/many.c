/* Hooks written over fresh entries while threads run them: 64 tiny functions (16 entry
 * NOPs and an add), called in a loop by registered threads; each hook's first installation
 * must move threads that stopped between two NOPs past the hook (the fix-up round).
 * Built with -fpatchable-function-entry=16. */
#include <pthread.h>
#include <stdatomic.h>

#include "lp_api.h"
static struct lp_api api;

#define H(n) __attribute__((noipa)) int h##n(int x) { return x + n; }
#define H8(n) H(n##0) H(n##1) H(n##2) H(n##3) H(n##4) H(n##5) H(n##6) H(n##7)
H8(1) H8(2) H8(3) H8(4) H8(5) H8(6) H8(7) H8(8)
#define P8(n) h##n##0, h##n##1, h##n##2, h##n##3, h##n##4, h##n##5, h##n##6, h##n##7,
static int (*const hs[64])(int) = {P8(1) P8(2) P8(3) P8(4) P8(5) P8(6) P8(7) P8(8)};
static const int add[64] = {
#define A8(n) n##0, n##1, n##2, n##3, n##4, n##5, n##6, n##7,
    A8(1) A8(2) A8(3) A8(4) A8(5) A8(6) A8(7) A8(8)};

static atomic_int stop, running, focus = -1;
static atomic_long bad, calls;
static pthread_t th[8];
static int nth;

static void *runner(void *token) {
    if (api.begin(token, __builtin_frame_address(0)))
        return 0;
    atomic_fetch_add(&running, 1);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int k = atomic_load_explicit(&focus, memory_order_relaxed);
        if (k >= 0) { /* every thread in one function: its entry NOPs are hot */
            for (int j = 0; j < 64; j++)
                if (hs[k](j) != j + add[k])
                    atomic_fetch_add(&bad, 1);
            atomic_fetch_add_explicit(&calls, 64, memory_order_relaxed);
            continue;
        }
        for (int i = 0; i < 64; i++)
            if (hs[i](i) != i + add[i])
                atomic_fetch_add(&bad, 1);
        atomic_fetch_add_explicit(&calls, 64, memory_order_relaxed);
    }
    api.end();
    return 0;
}

static void *root(void *arg) {
    int n = (int)(long)arg;
    if (api.begin(0, __builtin_frame_address(0)))
        return 0;
    for (nth = 0; nth < n && nth < 8; nth++)
        pthread_create(&th[nth], 0, runner, api.prepare());
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], 0);
    api.end();
    return 0;
}

static pthread_t root_th;
int many_start(const struct lp_api *a, int n) {
    api = *a;
    return pthread_create(&root_th, 0, root, (void *)(long)n);
}
int many_running(void) { return atomic_load(&running); }
void many_stop(void) {
    atomic_store(&stop, 1);
    pthread_join(root_th, 0);
}
long many_bad(void) { return atomic_load(&bad); }
long many_calls(void) { return atomic_load(&calls); }
void many_focus(int k) { atomic_store(&focus, k); }
