/* SPDX-License-Identifier: GPL-2.0 */
/*
 * livepatch_rs.h - writing a patch module for livepatch_rs.ko, the livepatch-core engine.
 *
 * The structures follow the kernel's <linux/livepatch.h> (v6.12): a patch module written for
 * the kernel's livepatch builds against this header with one change, its include line:
 *
 *	-#include <linux/livepatch.h>
 *	+#include <livepatch_rs.h>	(ccflags-y += -I<this directory> in its Kbuild)
 *
 * and is loaded after livepatch_rs.ko, whose exported lprs_enable_patch() it calls through
 * the klp_enable_patch() name. The patch then appears as
 * /sys/kernel/debug/livepatch_rs/<patch module name>/{enabled,transition,force,stalls,stats};
 * writing 0 to enabled disables it, and when the disable completed the directory goes and the
 * patch module may be removed (as the kernel's /sys/kernel/livepatch/<patch>).
 *
 * It includes what <linux/livepatch.h> includes (module, ftrace, completion, list, sched).
 *
 * What livepatch_rs does as the kernel does: functions found by name and old_sympos in
 * vmlinux or in a named module, no EXPORT_SYMBOL needed (klp_find_object_symbol's rules);
 * objects of modules that are loaded later or unloaded while the patch is enabled (a module
 * notifier; the callbacks run as in klp_module_coming/going); the four object callbacks with
 * the kernel's rules; atomic replace (.replace); system states (.states, checked as
 * klp_is_patch_compatible); the patch module is pinned while its patch is registered.
 *
 * What an unmodified 6.12 does not let a module do, and so livepatch_rs does not:
 *  - klp relocations (.klp.rela.<obj>.<sec> sections, SHF_RELA_LIVEPATCH): applying them needs
 *    apply_relocate_add() with the module loader's symbol state, which is not exported. A new
 *    function that needs an unexported symbol of its object looks it up itself (e.g. through
 *    kallsyms, as livepatch_rs does) or the replaced code is arranged to receive it.
 *  - shadow variables: klp_shadow_*() are the kernel's own (kernel/livepatch/shadow.c, a
 *    hash table independent of patching, exported when CONFIG_LIVEPATCH=y, as in Debian's
 *    kernels); on a kernel without CONFIG_LIVEPATCH they are not available.
 *  - sysfs: the interface is under debugfs (not /sys/kernel/livepatch, which belongs to the
 *    kernel's own livepatch).
 */
#ifndef _LIVEPATCH_RS_H
#define _LIVEPATCH_RS_H

#include <linux/types.h>
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/completion.h>
#include <linux/list.h>
#include <linux/sched.h>

struct klp_object;

/**
 * struct klp_func - a function to replace
 * @old_name:	name of the function to be patched
 * @new_func:	the replacement (same prototype)
 * @old_sympos:	position of old_name among the symbols of that name in its object
 *		(0: the name must be unique; 1: the first; ...)
 */
struct klp_func {
	/* external */
	const char *old_name;
	void *new_func;
	unsigned long old_sympos;

	/* internal: livepatch_rs keeps its state in its own descriptors */
	unsigned long lprs_reserved;
};

/**
 * struct klp_callbacks - pre/post live-(un)patch callbacks of an object
 * As the kernel's: pre_patch may fail (-errno) and then cancels the enable (or refuses a
 * module load); post_patch, pre_unpatch and post_unpatch run only for objects whose
 * pre_patch ran successfully.
 */
struct klp_callbacks {
	int (*pre_patch)(struct klp_object *obj);
	void (*post_patch)(struct klp_object *obj);
	void (*pre_unpatch)(struct klp_object *obj);
	void (*post_unpatch)(struct klp_object *obj);
	bool post_unpatch_enabled;
};

/**
 * struct klp_object - vmlinux (name NULL) or a module, and the functions replaced in it
 */
struct klp_object {
	/* external */
	const char *name;
	struct klp_func *funcs;
	struct klp_callbacks callbacks;

	/* internal */
	struct module *mod;	/* the module while loaded (set before its callbacks run); NULL for vmlinux */
	unsigned long lprs_reserved;
};

/**
 * struct klp_state - a system state a patch establishes or maintains
 */
struct klp_state {
	unsigned long id;
	unsigned int version;
	void *data;
};

/**
 * struct klp_patch - a live patch
 * @mod:	the patch module (THIS_MODULE); its name names the patch
 * @objs:	objects, terminated by an all-zero entry
 * @states:	system states, terminated by an entry with id 0
 * @replace:	atomic replace: on completion every other enabled patch is replaced
 */
struct klp_patch {
	/* external */
	struct module *mod;
	struct klp_object *objs;
	struct klp_state *states;
	bool replace;

	/* internal */
	unsigned long lprs_reserved;
};

#define klp_for_each_object_static(patch, obj) \
	for (obj = (patch)->objs; (obj)->funcs || (obj)->name; obj++)

#define klp_for_each_func_static(obj, func) \
	for (func = (obj)->funcs; func && ((func)->old_name || (func)->new_func || (func)->old_sympos); func++)

#define klp_for_each_state(patch, state) \
	for (state = (patch)->states; state && (state)->id; state++)

/**
 * lprs_enable_patch() - register and enable a patch (klp_enable_patch())
 * Call it from the patch module's init. Returns 0, or: -EINVAL (bad descriptor, symbol not
 * found or ambiguous, incompatible states), -EBUSY (another transition is in progress, or a
 * function conflicts with live patched code), -ENOSPC (livepatch_rs's descriptor pool is
 * full), -ENODEV (the patch module is going), a pre_patch callback's error.
 */
int lprs_enable_patch(struct klp_patch *patch);
#define klp_enable_patch lprs_enable_patch

/**
 * lprs_get_prev_state() - klp_get_prev_state(): state @id as the newest patch installed before
 * the patch in transition declares it, or NULL. Call it from a callback, as in the kernel.
 */
struct klp_state *lprs_get_prev_state(unsigned long id);
#define klp_get_prev_state lprs_get_prev_state

/* klp_get_state(): this patch's state @id, or NULL. */
static inline struct klp_state *klp_get_state(struct klp_patch *patch, unsigned long id)
{
	struct klp_state *state;

	klp_for_each_state(patch, state)
		if (state->id == id)
			return state;
	return NULL;
}

#ifdef CONFIG_LIVEPATCH
/* Shadow variables: the kernel's, exported by vmlinux (same prototypes as <linux/livepatch.h>). */
typedef int (*klp_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*klp_shadow_dtor_t)(void *obj, void *shadow_data);
void *klp_shadow_get(void *obj, unsigned long id);
void *klp_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
		       klp_shadow_ctor_t ctor, void *ctor_data);
void *klp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
			      klp_shadow_ctor_t ctor, void *ctor_data);
void klp_shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor);
void klp_shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor);
#endif

#endif /* _LIVEPATCH_RS_H */
