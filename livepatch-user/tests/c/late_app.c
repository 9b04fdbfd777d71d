/* A program that loads and unloads liblate.so on command while its threads call late_f()
 * (tests/dlopen.rs). Commands on stdin, one answer line each:
 *   load   -> "loaded <base> ctor=<late_f() as the constructor saw it>"
 *   loadg  -> the same, loaded RTLD_GLOBAL (and declared trusted)
 *   close  -> "closed gone" | "closed still-loaded" (the old address range is then reserved,
 *             so the next load maps the library elsewhere)
 *   check  -> "old=<n> new=<n> other=<n> held_old=<n> held_new=<n>": the results of late_f()
 *             in every worker and in main since the command, once each worker made 50
 *             calls; then those of the holder thread (below) meanwhile.
 *   hold   -> "holding": a registered thread is inside hold_here() (a patchable function of
 *             this program), calling late_f() every millisecond, until
 *   release-> "released".
 *   hooked -> "hooked yes" once hold_here's entry is no longer its 16 NOPs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "livepatch_user.h"

#define WORKERS 3
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static int (*_Atomic late_f)(void);
static atomic_int generation;
/* [generation % 2][thread: workers, main, holder][old, new, other] */
static atomic_long counts[2][WORKERS + 2][3];
static atomic_int holding, inside;
static atomic_int next;

static void record(int me, int gen, int r) {
    atomic_fetch_add(&counts[gen % 2][me][r == 100 ? 0 : r == 200 ? 1 : 2], 1);
}

static void *worker(void *token) {
    LIVEPATCH_THREAD_BEGIN(token);
    int me = atomic_fetch_add(&next, 1);
    for (;;) {
        pthread_rwlock_rdlock(&lock);
        int (*f)(void) = atomic_load(&late_f);
        if (f) {
            int gen = atomic_load(&generation);
            record(me, gen, f());
        }
        pthread_rwlock_unlock(&lock);
        usleep(200);
        livepatch_safe_point();
    }
    return 0;
}

/* Holds the holder thread inside a patched function while it calls late_f(): its universe
 * cannot switch meanwhile. */
__attribute__((noipa)) void hold_here(void) {
    atomic_store(&inside, 1);
    while (atomic_load(&holding)) {
        pthread_rwlock_rdlock(&lock);
        int (*f)(void) = atomic_load(&late_f);
        if (f)
            record(WORKERS + 1, atomic_load(&generation), f());
        pthread_rwlock_unlock(&lock);
        usleep(1000);
    }
    atomic_store(&inside, 0);
}

static void *holder(void *token) {
    LIVEPATCH_THREAD_BEGIN(token);
    for (;;) {
        if (atomic_load(&holding))
            hold_here();
        usleep(1000);
        livepatch_safe_point();
    }
    return 0;
}

static const char *lib_path;
static void *handle;

/* The loaded library's size in memory (0: not loaded). */
static int find(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    const char *slash = strrchr(info->dlpi_name, '/');
    if (!slash || strcmp(slash + 1, "liblate.so"))
        return 0;
    size_t end = 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD && info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz > end)
            end = info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz;
    *(size_t *)data = (end + 4095) & ~(size_t)4095;
    return 1;
}

static size_t loaded(void) {
    size_t span = 0;
    dl_iterate_phdr(find, &span);
    return span;
}

int main(int argc, char **argv) {
    if (argc != 3 || livepatch_init() || LIVEPATCH_THREAD_BEGIN(NULL) || livepatch_trust_object((void *)main) ||
        livepatch_serve(argv[1]))
        return 1;
    lib_path = argv[2];
    for (int i = 0; i < WORKERS; i++) {
        pthread_t th;
        if (pthread_create(&th, 0, worker, livepatch_thread_prepare()))
            return 1;
    }
    pthread_t th;
    if (pthread_create(&th, 0, holder, livepatch_thread_prepare()))
        return 1;
    printf("ready\n");
    fflush(stdout);
    char line[64];
    void *base = 0;
    size_t span = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (!strcmp(line, "load\n") || !strcmp(line, "loadg\n")) {
            int global = line[4] == 'g';
            handle = dlopen(lib_path, RTLD_NOW | (global ? RTLD_GLOBAL : 0));
            if (!handle) {
                printf("error %s\n", dlerror());
            } else {
                int (*f)(void) = (int (*)(void))dlsym(handle, "late_f");
                Dl_info info;
                dladdr((void *)f, &info);
                base = info.dli_fbase;
                span = loaded();
                if (global)
                    livepatch_trust_object((void *)f);
                printf("loaded %p ctor=%d\n", base, *(int *)dlsym(handle, "late_ctor_saw"));
                atomic_store(&late_f, f);
            }
        } else if (!strcmp(line, "close\n")) {
            pthread_rwlock_wrlock(&lock);
            atomic_store(&late_f, 0);
            dlclose(handle);
            pthread_rwlock_unlock(&lock);
            int still = loaded() != 0;
            if (!still && mmap(base, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != base)
                perror("late_app: reserving the old range");
            printf("closed %s\n", still ? "still-loaded" : "gone");
        } else if (!strcmp(line, "check\n")) {
            int gen = atomic_load(&generation) + 1;
            for (int t = 0; t <= WORKERS + 1; t++)
                for (int k = 0; k < 3; k++)
                    atomic_store(&counts[gen % 2][t][k], 0);
            atomic_store(&generation, gen);
            for (int i = 0; i < 10; i++) {
                pthread_rwlock_rdlock(&lock);
                int (*f)(void) = atomic_load(&late_f);
                if (f)
                    record(WORKERS, gen, f());
                pthread_rwlock_unlock(&lock);
            }
            for (int waited = 0; waited < 10000; waited++) {
                int done = 1;
                for (int t = 0; t < WORKERS; t++)
                    done &= counts[gen % 2][t][0] + counts[gen % 2][t][1] + counts[gen % 2][t][2] >= 50;
                if (done)
                    break;
                usleep(1000);
            }
            long sum[3] = {0};
            for (int t = 0; t <= WORKERS; t++)
                for (int k = 0; k < 3; k++)
                    sum[k] += atomic_load(&counts[gen % 2][t][k]);
            long held[3];
            for (int k = 0; k < 3; k++)
                held[k] = atomic_load(&counts[gen % 2][WORKERS + 1][k]);
            printf("old=%ld new=%ld other=%ld held_old=%ld held_new=%ld\n", sum[0], sum[1], sum[2] + held[2], held[0],
                   held[1]);
        } else if (!strcmp(line, "hold\n")) {
            atomic_store(&holding, 1);
            while (!atomic_load(&inside))
                usleep(1000);
            printf("holding\n");
        } else if (!strcmp(line, "hooked\n")) {
            const volatile unsigned char *entry = (const volatile unsigned char *)hold_here;
            int nops = 1;
            for (int i = 0; i < 16; i++)
                nops &= entry[i] == 0x90;
            printf("hooked %s\n", nops ? "no" : "yes");
        } else if (!strcmp(line, "release\n")) {
            atomic_store(&holding, 0);
            while (atomic_load(&inside))
                usleep(1000);
            printf("released\n");
        } else {
            printf("error unknown command\n");
        }
        fflush(stdout);
    }
    return 0;
}
