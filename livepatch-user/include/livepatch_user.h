/* livepatch-user: the C interface of the runtime (liblivepatch_user) and of patch objects. */
#ifndef LIVEPATCH_USER_H
#define LIVEPATCH_USER_H

/* ---- A program being patched ---- */
int  livepatch_init(void);                         /* once, before any patch */
void *livepatch_thread_prepare(void);              /* parent, before pthread_create */
int  livepatch_thread_begin(void *token, const void *frame); /* child, first thing */
void livepatch_thread_end(void);                   /* child, last thing */
void livepatch_safe_point(void);                   /* cond_resched analogue */
int  livepatch_trust_object(const void *addr);     /* object built with frame pointers */
int  livepatch_apply(const char *path, unsigned timeout_ms);
int  livepatch_serve(const char *socket_path);     /* control socket for livepatchctl */

/* Registers the calling thread; use at the top of every thread's start routine (and main). */
#define LIVEPATCH_THREAD_BEGIN(token) livepatch_thread_begin((token), __builtin_frame_address(0))

/* ---- A patch object (shared object loaded with dlopen) ---- */
#define LIVEPATCH_ABI 1
struct livepatch_func {
    const char *name;  /* the replaced function's symbol */
    void *new_func;    /* its variant in this object */
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

#endif
