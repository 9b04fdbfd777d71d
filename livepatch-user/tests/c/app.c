/* "A program of one's own", built as livepatch-user/README.md says: linked against
 * liblivepatch_user.so, threads registered, a control socket. Its threads call answer()
 * (1 in this build); it prints "fixed in every thread" once every thread, main included,
 * has run answer() returning 2 — after an operator applied a patch from outside. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include "livepatch_user.h"

#define WORKERS 4
static atomic_int seen[WORKERS + 1];
static atomic_int next;

/* noipa: gcc would otherwise find answer() const and hoist its call out of the loops (a
 * caller must not assume anything about a function that may be replaced). */
__attribute__((noipa)) int answer(void) { return 1; }

static void *worker(void *token) {
    LIVEPATCH_THREAD_BEGIN(token);
    int me = atomic_fetch_add(&next, 1);
    for (;;) {
        atomic_store(&seen[me], answer());
        usleep(500);
        livepatch_safe_point();
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 || livepatch_init() || LIVEPATCH_THREAD_BEGIN(NULL) || livepatch_trust_object((void *)main) ||
        livepatch_serve(argv[1]))
        return 1;
    for (int i = 0; i < WORKERS; i++) {
        pthread_t th;
        if (pthread_create(&th, 0, worker, livepatch_thread_prepare()))
            return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        atomic_store(&seen[WORKERS], answer());
        int fixed = 1;
        for (int i = 0; i <= WORKERS; i++)
            fixed &= atomic_load(&seen[i]) == 2;
        if (fixed) {
            printf("fixed in every thread\n");
            fflush(stdout);
            while (getchar() != EOF) { /* until the operator closes our stdin */
            }
            return 0;
        }
        usleep(1000);
    }
}
