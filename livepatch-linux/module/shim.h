/* SPDX-License-Identifier: GPL-2.0 */
/* The interface between shim.c and the Rust side of livepatch_rs.ko (mirrored in shim.rs). */
#ifndef LP_SHIM_H
#define LP_SHIM_H

#include <linux/types.h>

#define LP_MAX_HOOKS 16
#define LP_BATCH_MAX 64
#define LP_SHOW_MAX 4096

enum { LP_PIN_BUSY = -16 /* -EBUSY */ };
enum { LP_WALK_OK = 0, LP_WALK_STOP = 1, LP_WALK_UNRELIABLE = -2, LP_WALK_NO_STACK = -3 };
enum {
	LP_ATTR_ENABLED,
	LP_ATTR_TRANSITION,
	LP_ATTR_FORCE,
	LP_ATTR_STALLS,
	LP_ATTR_STATS,
	LP_ATTR_REPLACE,
	LP_ATTR_PATCHED,	/* of an object; its index in bits 8.. of the attribute */
};

struct task_struct;

struct lp_task_info {
	u64 start_time;
	s32 pid;
	s32 tgid;
	u32 cpu;
	u32 state;
	bool kthread;
	bool idle;
	bool exiting;
	bool on_cpu;
	char comm[16];
};

typedef int (*lp_pin_cb)(void *ctx, struct task_struct *t);
typedef int (*lp_frame_cb)(void *ctx, unsigned long addr);
typedef void (*lp_cpu_cb)(void *ctx, struct task_struct *curr, u32 cpu);

/* shim.c */
int lp_shim_resolve(const char *name, bool exported, unsigned long *addr, unsigned long *size);
void lp_shim_release(const char *name, bool exported);
int lp_shim_extent(unsigned long addr, unsigned long *size);
int lp_shim_find_symbol(const char *objname, const char *name, unsigned long sympos,
			unsigned long *addr, unsigned long *size);
int lp_shim_module_notifier(bool on);
bool lp_shim_module_loaded(const char *name);

/* Registration by patch modules (register.c, include/livepatch_rs.h), mirrored in shim.rs. */
#define LP_REG_OBJS 4
#define LP_REG_FUNCS 16
#define LP_REG_STATES 4
#define LP_REG_NAME 56
struct lp_reg_func {
	const char *name;
	unsigned long sympos;
	unsigned long new_addr;
	u32 obj;
};
struct lp_reg_obj {
	const char *name;	/* NULL: vmlinux */
	void *klp;		/* struct klp_object *, for its callbacks */
};
struct lp_reg_state {
	unsigned long id;
	u32 version;
	void *klp;		/* struct klp_state *, for klp_get_prev_state() */
};
struct lp_reg {
	const char *patch_name;
	void *module;		/* struct module * of the patch module */
	bool replace;
	u32 nobjs, nfuncs, nstates;
	struct lp_reg_obj objs[LP_REG_OBJS];
	struct lp_reg_func funcs[LP_REG_FUNCS];
	struct lp_reg_state states[LP_REG_STATES];
};
enum { LP_CB_PRE_PATCH, LP_CB_POST_PATCH, LP_CB_PRE_UNPATCH, LP_CB_POST_UNPATCH };
int lp_rs_register(const struct lp_reg *reg);
void *lp_rs_prev_state(unsigned long id);
bool lp_shim_engine_locked(void);
int lp_shim_klp_callback(void *object, u32 which);
bool lp_shim_patch_module_get(void *mod);
void lp_shim_patch_module_put(void *mod);
void lp_shim_queue_reap(void);
void lp_shim_cancel_reap(void);
void lp_rs_reap(void);
/* Rust: a module is coming (0 or a negative errno refusing the load) / going. */
struct module;
int lp_rs_module_coming(struct module *mod);
void lp_rs_module_going(struct module *mod);
const char *lp_shim_module_name(struct module *mod);
void lp_shim_notify_mod(void *mod);
int lp_shim_first_symbol(const char *name, unsigned long *addr, unsigned long *size);
unsigned long lp_shim_lookup_name(const char *name);
struct lp_task_rec;
int lp_shim_tracking(bool on);
void lp_shim_tasks_exit(void);
int lp_shim_tasks_populate(void);
int lp_shim_tasks_untracked(void);
int lp_shim_tasks_walk_end(void);
u32 lp_shim_idle_records(u32 *possible);
u32 lp_shim_tasks_count(void);
u32 lp_shim_tasks_next(bool restart, u32 max, struct task_struct **tasks, struct lp_task_rec **recs);
void lp_shim_put_task(struct task_struct *t);
struct lp_task_rec *lp_shim_task_rec(struct task_struct *t);
struct lp_task_rec *lp_shim_task_rec_cache(struct task_struct *curr);
void lp_shim_sync_all_cpus(void);
int lp_shim_resched_hook(bool on);
void lp_shim_lock(void);
void lp_shim_unlock(void);
bool lp_shim_task_running(struct task_struct *t);
struct task_struct *lp_shim_idle_task(u32 cpu);
bool lp_shim_comm_of(s32 pid, char *buf);
int lp_shim_stop_machine(int (*fn)(void *), void *ctx);
int lp_shim_hook_install(u32 slot, unsigned long ip, const void *fslot);
int lp_shim_hook_remove(u32 slot);
struct task_struct *lp_shim_current(void);
void lp_shim_task_info(struct task_struct *t, struct lp_task_info *info);
int lp_shim_pin(struct task_struct *t, lp_pin_cb fn, void *ctx);
int lp_shim_offline_idle(u32 cpu, lp_pin_cb fn, void *ctx);
int lp_shim_walk(struct task_struct *t, lp_frame_cb cb, void *ctx);
int lp_shim_kick_user(struct task_struct *t, bool signal);
int lp_shim_works_pending(void);
void lp_shim_wake(struct task_struct *t);
int lp_shim_on_cpu(u32 cpu, lp_cpu_cb fn, void *ctx);
u32 lp_shim_nr_cpu_ids(void);
bool lp_shim_cpu_online(u32 cpu);
void lp_shim_synchronize(void);
void lp_shim_assert_switch_section(void);
void lp_shim_exit_barrier(void);
void lp_shim_taint(void);
u64 lp_shim_now_ns(void);
void lp_shim_msleep(u32 ms);
void lp_shim_udelay(u32 us);
u32 lp_shim_fentry_ret_offset(unsigned long func);
void lp_shim_schedule_retry(u64 delay_ns);
void lp_shim_cancel_retry(void);
int lp_shim_dir_add(u32 patch, const char *name, bool builtin);
int lp_shim_dir_add_object(u32 patch, u32 obj, const char *name);
int lp_shim_dir_add_func(u32 patch, u32 obj, const char *name, unsigned long sympos);
int lp_shim_dir_remove(u32 patch);
void lp_shim_dir_remove_all(void);
int lp_shim_patch_state_file(bool on);
void lp_shim_klp_log(const char *msg, int len);
int lp_rs_task_patch_state(struct task_struct *t);
bool lp_shim_module_get(void);
void lp_shim_module_put(void);
void lp_shim_log(int level, const char *msg, int len);

/*
 * The part of livepatch_core's FuncSlot and FuncNode the ftrace handler reads: steps 1 and 2
 * of the redirect decision (redirect::settled), so that a call outside a transition of its
 * function never leaves C. FuncSlot and FuncNode are repr(C) in the core, which exports the
 * offsets (redirect::SLOT_TOP_OFFSET, NODE_TRANSITION_OFFSET, NODE_ENTRY_OFFSET); control.rs
 * asserts they equal the LP_*_OFFSET numbers below, shim.c that these structs have them.
 */
struct lp_func_node {
	bool transition;	/* an AtomicBool: 0 or 1; written with release ordering */
	bool away;
	bool linked;
	u32 owner;
	unsigned long entry;	/* the variant's entry, 0 for a nop; fixed while linked */
};

struct lp_func_slot {
	struct lp_func_node *top;	/* an AtomicRef: NULL when nothing is stacked */
};

#define LP_SLOT_TOP_OFFSET 0
#define LP_NODE_TRANSITION_OFFSET 0
#define LP_NODE_ENTRY_OFFSET 8

/* Rust (livepatch_rs.rs) */
unsigned long lp_rs_redirect_in_transition(const struct lp_func_node *top, struct task_struct *curr,
					   struct lp_task_rec *cached, unsigned long parent_ip);
void lp_rs_exit_to_user(struct task_struct *t, bool signal, bool exiting);
void lp_rs_inherit(const u32 *parent, u32 *child);
void lp_rs_untracked_settle(void);
void lp_rs_cond_resched(void);
void lp_rs_retry(void);
int lp_rs_attr_show(u32 patch, u32 attr, char *buf, u32 len);
int lp_rs_attr_store(u32 patch, u32 attr, const char *buf, u32 len);

#endif
