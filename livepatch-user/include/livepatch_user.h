/* livepatch-user: the C interface of the runtime (liblivepatch_user) and of patch objects. */
#ifndef LIVEPATCH_USER_H
#define LIVEPATCH_USER_H

/* ---- A program being patched ---- */
int  livepatch_init(void);                         /* once, before any patch */
void *livepatch_thread_prepare(void);              /* parent, before pthread_create */
void livepatch_thread_discard(void *token);         /* parent, if pthread_create failed */
int  livepatch_thread_begin(void *token, const void *frame); /* child, first thing */
void livepatch_thread_end(void);                   /* child, last thing */
void livepatch_safe_point(void);                   /* cond_resched analogue */
int  livepatch_trust_object(const void *addr);     /* object built with frame pointers */
void livepatch_thread_offline(void);               /* around a blocking call: holds no */
void livepatch_thread_online(void);                /* shadow data meanwhile (below)    */
int  livepatch_apply(const char *path, unsigned timeout_ms);
int  livepatch_serve(const char *socket_path);     /* control socket for livepatchctl */

/* Registers the calling thread; use at the top of every thread's start routine (and main). */
#define LIVEPATCH_THREAD_BEGIN(token) livepatch_thread_begin((token), __builtin_frame_address(0))

/* ---- A patch object (shared object loaded with dlopen) ---- */
#define LIVEPATCH_ABI 2   /* 1: struct livepatch_func without `object` (still accepted) */
struct livepatch_func {
    const char *name;  /* the replaced function's symbol */
    void *new_func;    /* its variant in this object */
    const char *object; /* NULL: the process's global scope; else the file name of the library
                           the function is in ("libfoo.so.1"), which may be loaded later:
                           patched when the interposed dlopen loads it (after its
                           constructors), unpatched before its last dlclose */
};
struct livepatch_patch {
    unsigned abi;      /* LIVEPATCH_ABI */
    const char *name;
    int replace;       /* non-zero: cumulative, replaces every enabled patch */
    unsigned nfuncs;
    const struct livepatch_func *funcs;
    int  (*pre_patch)(void);    /* may be NULL; non-zero cancels the enable */
    void (*post_patch)(void);
    void (*pre_unpatch)(void);
    void (*post_unpatch)(void);
};

/* ---- Shadow variables (the kernel's klp_shadow_*; src/shadow.rs) ----
 * Data a patch attaches to the program's objects, keyed by (object address, id < 2^32).
 * Process-wide and thread-safe; get is lock-free. Errors are negative errno values:
 * -EINVAL (NULL obj or data, id >= 2^32), -EEXIST (alloc: exists), -ENOENT (free: none),
 * -ENOSPC (table full), -ENOMEM, -ECANCELED (the constructor returned non-zero: nothing is
 * attached), -EDEADLK (called from a constructor or destructor; get is allowed there).
 * Freed data is reclaimed only after every registered thread passed livepatch_safe_point()
 * (or ended, or was offline) since the free: use a pointer from get/alloc until your next
 * safe point, not across one. Unregistered threads are not waited for. */
#include <stddef.h>
typedef int  (*lpu_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*lpu_shadow_dtor_t)(void *obj, void *shadow_data);
void *lpu_shadow_get(void *obj, unsigned long id);            /* NULL: none */
int   lpu_shadow_alloc(void *obj, unsigned long id, size_t size, lpu_shadow_ctor_t ctor,
                       void *ctor_data, void **shadow_data); /* size zeroed bytes; ctor may be NULL */
int   lpu_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, lpu_shadow_ctor_t ctor,
                              void *ctor_data, void **shadow_data);
int   lpu_shadow_free(void *obj, unsigned long id, lpu_shadow_dtor_t dtor); /* dtor may be NULL */
long  lpu_shadow_free_all(unsigned long id, lpu_shadow_dtor_t dtor);      /* how many */
long  lpu_shadow_waiting(void);    /* freed blocks not yet reclaimed (waiting for safe points) */

#endif
