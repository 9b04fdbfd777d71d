// SPDX-License-Identifier: GPL-2.0
/*
 * The registration API of livepatch_rs.ko for patch modules (include/livepatch_rs.h): the
 * kernel-shaped descriptors are checked and flattened here, in C (their layout is the
 * header's), and handed to the Rust side, which copies what it keeps.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <livepatch_rs.h>

#include "shim.h"

static int lp_flatten(struct klp_patch *patch, struct lp_reg *reg)
{
	struct klp_object *obj;
	struct klp_func *func;
	struct klp_state *state;

	if (!patch || !patch->mod || !patch->objs)
		return -EINVAL;
#ifdef CONFIG_LIVEPATCH
	/* As klp_enable_patch(): only a module declaring MODULE_INFO(livepatch, "Y"). */
	if (!patch->mod->klp)
		return -EINVAL;
#endif
	reg->patch_name = patch->mod->name;
	reg->module = patch->mod;
	reg->replace = patch->replace;
	klp_for_each_object_static(patch, obj) {
		if (reg->nobjs >= LP_REG_OBJS)
			return -ENOSPC;
		/* As klp_init_object(): an object needs functions (possibly an empty list). */
		if (!obj->funcs)
			return -EINVAL;
		if (obj->name && strlen(obj->name) >= LP_REG_NAME)
			return -EINVAL;
		reg->objs[reg->nobjs].name = obj->name;
		reg->objs[reg->nobjs].klp = obj;
		klp_for_each_func_static(obj, func) {
			/* As klp_init_func(): a name and a replacement, a name of sane length. */
			if (!func->old_name || !func->new_func || strlen(func->old_name) >= LP_REG_NAME)
				return -EINVAL;
			if (reg->nfuncs >= LP_REG_FUNCS)
				return -ENOSPC;
			reg->funcs[reg->nfuncs].name = func->old_name;
			reg->funcs[reg->nfuncs].sympos = func->old_sympos;
			reg->funcs[reg->nfuncs].new_addr = (unsigned long)func->new_func;
			reg->funcs[reg->nfuncs].obj = reg->nobjs;
			reg->nfuncs++;
		}
		reg->nobjs++;
	}
	klp_for_each_state(patch, state) {
		if (reg->nstates >= LP_REG_STATES)
			return -ENOSPC;
		reg->states[reg->nstates].id = state->id;
		reg->states[reg->nstates].version = state->version;
		reg->states[reg->nstates].klp = state;
		reg->nstates++;
	}
	return 0;
}

int lprs_enable_patch(struct klp_patch *patch)
{
	struct lp_reg *reg = kzalloc(sizeof(*reg), GFP_KERNEL);
	int ret;

	if (!reg)
		return -ENOMEM;
	ret = lp_flatten(patch, reg);
	if (!ret)
		ret = lp_rs_register(reg);
	kfree(reg);
	return ret;
}
EXPORT_SYMBOL_GPL(lprs_enable_patch);

/* The module whose notifier call is in progress (under the engine lock), if any. */
static struct module *lp_notify_mod;

void lp_shim_notify_mod(void *mod)
{
	lp_notify_mod = mod;
}

typedef struct module *(*lp_module_address_t)(unsigned long addr);

/*
 * The loaded module named @name, as klp_init_object_loaded() sets obj->mod: the module in the
 * notifier call, else the owner of one of its symbols (__module_address(), not exported, is
 * reached through kallsyms like the symbol walkers).
 */
static struct module *lp_module_named(const char *name)
{
	static lp_module_address_t module_address;
	unsigned long addr, size;
	struct module *mod;

	if (lp_notify_mod && !strcmp(lp_notify_mod->name, name))
		return lp_notify_mod;
	if (!module_address)
		module_address = (lp_module_address_t)lp_shim_lookup_name("__module_address");
	if (!module_address || lp_shim_first_symbol(name, &addr, &size))
		return NULL;
	preempt_disable();
	mod = module_address(addr);
	preempt_enable();
	return mod;
}

/*
 * klp_get_prev_state(): the state @id as the newest patch installed before the patch in
 * transition declares it. As in the kernel, only meaningful from a callback (which
 * livepatch_rs runs under its engine lock); anywhere else it returns NULL.
 */
struct klp_state *lprs_get_prev_state(unsigned long id)
{
	if (!lp_shim_engine_locked())
		return NULL;
	return lp_rs_prev_state(id);
}
EXPORT_SYMBOL_GPL(lprs_get_prev_state);

int lp_shim_klp_callback(void *object, u32 which)
{
	struct klp_object *obj = object;

	/* Looked up each time: a module that went and came back is another struct module. */
	obj->mod = obj->name ? lp_module_named(obj->name) : NULL;
	switch (which) {
	case LP_CB_PRE_PATCH:
		return obj->callbacks.pre_patch ? obj->callbacks.pre_patch(obj) : 0;
	case LP_CB_POST_PATCH:
		if (obj->callbacks.post_patch)
			obj->callbacks.post_patch(obj);
		return 0;
	case LP_CB_PRE_UNPATCH:
		if (obj->callbacks.pre_unpatch)
			obj->callbacks.pre_unpatch(obj);
		return 0;
	case LP_CB_POST_UNPATCH:
		if (obj->callbacks.post_unpatch)
			obj->callbacks.post_unpatch(obj);
		/* As klp_free_object_loaded(): a going module is no longer the object's. */
		if (obj->mod && obj->mod == lp_notify_mod && obj->mod->state == MODULE_STATE_GOING)
			obj->mod = NULL;
		return 0;
	}
	return -EINVAL;
}

bool lp_shim_patch_module_get(void *mod)
{
	return try_module_get(mod);
}

void lp_shim_patch_module_put(void *mod)
{
	module_put(mod);
}
