// SPDX-License-Identifier: GPL-2.0
/*
 * lp_shim.c - the thin C side of livepatch_rs.ko.
 *
 * Only what 6.12's Rust bindings cannot express lives here: struct layouts (ftrace_ops,
 * task_struct fields, unwind_state, kprobe), inline functions and macros (unwind_start,
 * unwind_get_entry_regs, user_mode, for_each_process_thread, rcu_read_lock, raw_spin_lock on
 * pi_lock, get/put_task_struct, sysfs attributes). Every decision is made in Rust; each function
 * here does one kernel operation and returns. Only exported symbols are used (see README.md).
 */
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/kallsyms.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/sched/task_stack.h>
#include <linux/task_work.h>
#include <linux/smp.h>
#include <linux/rcupdate.h>
#include <linux/workqueue.h>
#include <linux/debugfs.h>
#include <linux/uaccess.h>
#include <linux/delay.h>
#include <linux/seq_file.h>
#include <linux/proc_fs.h>
#include <linux/timekeeping.h>
#include <linux/stop_machine.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/hrtimer.h>
#include <linux/hash.h>
#include <linux/slab.h>
#include <linux/cpu.h>
#include <linux/panic.h>
#include <linux/completion.h>
#include <asm/unwind.h>
#include <asm/ibt.h>
#include <linux/uaccess.h>

#include "shim.h"

/* ------------------------------------------------------------------------------------------ */
/* Symbols                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef unsigned long (*kallsyms_lookup_name_t)(const char *name);
static kallsyms_lookup_name_t lp_kallsyms_lookup_name;

/*
 * kallsyms_lookup_name() is not exported (since 5.7). The known out-of-tree way: a kprobe on it
 * resolves its address (register_kprobe() looks the name up internally), then unregister.
 */
static int lp_find_kallsyms_lookup_name(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int ret;

	if (lp_kallsyms_lookup_name)
		return 0;
	ret = register_kprobe(&kp);
	if (ret < 0)
		return ret;
	lp_kallsyms_lookup_name = (kallsyms_lookup_name_t)kp.addr;
	unregister_kprobe(&kp);
	return lp_kallsyms_lookup_name ? 0 : -ENOENT;
}

/* Parses "name+0xOFF/0xSIZE [mod]" as printed by sprint_symbol(). */
static int lp_symbol_extent(unsigned long addr, unsigned long *size)
{
	char buf[KSYM_SYMBOL_LEN];
	char *plus, *slash, *end;
	unsigned long off;

	sprint_symbol(buf, addr);
	plus = strrchr(buf, '+');
	slash = plus ? strchr(plus, '/') : NULL;
	if (!slash)
		return -ENOENT;
	*slash = 0;
	end = strchr(slash + 1, ' ');
	if (end)
		*end = 0;
	if (kstrtoul(plus + 1, 0, &off) || kstrtoul(slash + 1, 0, size))
		return -EINVAL;
	return off == 0 ? 0 : -EINVAL;
}

int lp_shim_resolve(const char *name, bool exported, unsigned long *addr, unsigned long *size)
{
	int ret;

	if (exported) {
		/* Takes a reference on the owning module: it cannot be unloaded while patched. */
		*addr = (unsigned long)__symbol_get(name);
	} else {
		ret = lp_find_kallsyms_lookup_name();
		if (ret)
			return ret;
		*addr = lp_kallsyms_lookup_name(name);
	}
	if (!*addr)
		return -ENOENT;
	ret = lp_symbol_extent(*addr, size);
	if (ret && exported)
		__symbol_put(name);
	return ret;
}

/*
 * Finding a function by object, name and position, as the kernel's klp_find_object_symbol()
 * does: module_kallsyms_on_each_symbol() for a module (it finds a COMING module, which
 * __symbol_get() does not, and needs no EXPORT_SYMBOL), kallsyms_on_each_match_symbol() for
 * vmlinux. Neither is exported in 6.12: both are resolved once through kallsyms_lookup_name()
 * (the kprobe route above) and called through the pointer (see the README's IBT caveat).
 */
typedef int (*lp_mod_each_t)(const char *modname, int (*fn)(void *, const char *, unsigned long), void *data);
typedef int (*lp_match_each_t)(int (*fn)(void *, unsigned long), const char *name, void *data);
static lp_mod_each_t lp_module_kallsyms_on_each_symbol;
static lp_match_each_t lp_kallsyms_on_each_match_symbol;

struct lp_find_arg {
	const char *name;
	unsigned long addr;
	unsigned long count;
	unsigned long pos;
};

static int lp_match_callback(void *data, unsigned long addr)
{
	struct lp_find_arg *args = data;

	args->addr = addr;
	args->count++;
	/* As klp_match_callback(): stop at the wanted position, or at a second match for pos 0. */
	if ((args->pos && args->count == args->pos) || (!args->pos && args->count > 1))
		return 1;
	return 0;
}

static int lp_find_callback(void *data, const char *name, unsigned long addr)
{
	struct lp_find_arg *args = data;

	if (strcmp(args->name, name))
		return 0;
	return lp_match_callback(data, addr);
}

static int lp_find_symbol_walkers(void)
{
	int ret = lp_find_kallsyms_lookup_name();

	if (ret)
		return ret;
	if (!lp_module_kallsyms_on_each_symbol)
		lp_module_kallsyms_on_each_symbol =
			(lp_mod_each_t)lp_kallsyms_lookup_name("module_kallsyms_on_each_symbol");
	if (!lp_kallsyms_on_each_match_symbol)
		lp_kallsyms_on_each_match_symbol =
			(lp_match_each_t)lp_kallsyms_lookup_name("kallsyms_on_each_match_symbol");
	if (!lp_module_kallsyms_on_each_symbol || !lp_kallsyms_on_each_match_symbol)
		return -ENOENT;
	return 0;
}

int lp_shim_find_symbol(const char *objname, const char *name, unsigned long sympos,
			unsigned long *addr, unsigned long *size)
{
	struct lp_find_arg args = { .name = name, .pos = sympos };
	int ret = lp_find_symbol_walkers();

	if (ret)
		return ret;
	if (objname)
		lp_module_kallsyms_on_each_symbol(objname, lp_find_callback, &args);
	else
		lp_kallsyms_on_each_match_symbol(lp_match_callback, name, &args);
	*addr = 0;
	if (args.addr == 0) {
		pr_err("livepatch_rs: symbol '%s' not found in symbol table\n", name);
		return -EINVAL;
	}
	if (args.count > 1 && sympos == 0) {
		pr_err("livepatch_rs: unresolvable ambiguity for symbol '%s' in object '%s'\n", name,
		       objname ? objname : "vmlinux");
		return -EINVAL;
	}
	if (sympos > 0 && sympos != args.count) {
		pr_err("livepatch_rs: symbol position %lu for symbol '%s' in object '%s' not found\n",
		       sympos, name, objname ? objname : "vmlinux");
		return -EINVAL;
	}
	*addr = args.addr;
	return lp_symbol_extent(*addr, size);
}

static int lp_any_symbol(void *data, const char *name, unsigned long addr)
{
	return 1;
}

/*
 * Whether module @name is loaded (or coming, or going): it has a symbol. For a module loaded
 * before livepatch_rs, whose arrival the notifier did not see.
 */
static int lp_first_symbol_cb(void *data, const char *name, unsigned long addr)
{
	*(unsigned long *)data = addr;
	return addr != 0;
}

/* The address of some symbol of module @name (0 if it has none). */
int lp_shim_first_symbol(const char *name, unsigned long *addr, unsigned long *size)
{
	*addr = 0;
	*size = 0;
	if (lp_find_symbol_walkers())
		return -ENOENT;
	lp_module_kallsyms_on_each_symbol(name, lp_first_symbol_cb, addr);
	return *addr ? 0 : -ENOENT;
}

const char *lp_shim_module_name(struct module *mod)
{
	return mod->name;
}

unsigned long lp_shim_lookup_name(const char *name)
{
	if (lp_find_kallsyms_lookup_name())
		return 0;
	return lp_kallsyms_lookup_name(name);
}

bool lp_shim_module_loaded(const char *name)
{
	if (lp_find_symbol_walkers())
		return false;
	return lp_module_kallsyms_on_each_symbol(name, lp_any_symbol, NULL) != 0;
}

/*
 * The module notifier: the kernel's klp_module_coming()/klp_module_going(). COMING runs after
 * ftrace_module_enable() (prepare_coming_module()), so the module's fentry sites can be hooked
 * before any of its code runs; a non-zero return refuses the load. GOING runs after the
 * module's exit function and before ftrace_release_mod(), and also when a load fails after
 * COMING. Neither holds module_mutex, so the lookup above may take it.
 */
static int lp_module_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;
	int ret = 0;

	if (action == MODULE_STATE_COMING)
		ret = lp_rs_module_coming(mod);
	else if (action == MODULE_STATE_GOING)
		lp_rs_module_going(mod);
	return notifier_from_errno(ret);
}

static struct notifier_block lp_module_nb = {
	.notifier_call = lp_module_notify,
	/* After other notifiers at COMING, before them at GOING (as klp runs outside the chain). */
	.priority = INT_MIN,
};

int lp_shim_module_notifier(bool on)
{
	if (on)
		return register_module_notifier(&lp_module_nb);
	return unregister_module_notifier(&lp_module_nb);
}

int lp_shim_extent(unsigned long addr, unsigned long *size)
{
	return lp_symbol_extent(addr, size);
}

void lp_shim_release(const char *name, bool exported)
{
	if (exported)
		__symbol_put(name);
}

/* ------------------------------------------------------------------------------------------ */
/* ftrace hooks                                                                                */
/* ------------------------------------------------------------------------------------------ */

struct lp_hook {
	struct ftrace_ops ops;
	/*
	 * The engine's func slot of this hook (a livepatch_core FuncSlot in the module's static
	 * engine storage), set at install: the handler reads its func stack's top, as ftrace hands
	 * klp_ftrace_handler its klp_ops, so no slot index is looked up per call.
	 */
	const struct lp_func_slot *fslot;
	unsigned long ip;
	u32 slot;
	bool registered;
};

static struct lp_hook lp_hooks[LP_MAX_HOOKS];

/* Each CPU's last task record found by the redirect: see "Task records" below. */
static DEFINE_PER_CPU(struct lp_task_rec *, lp_rec_cache);

static void notrace lp_ftrace_handler(unsigned long ip, unsigned long parent_ip,
				      struct ftrace_ops *fops, struct ftrace_regs *fregs)
{
	struct lp_hook *hook = container_of(fops, struct lp_hook, ops);
	const struct lp_func_node *top;
	unsigned long target;
	int bit;

	/*
	 * Disables preemption: the grace period of lp_shim_synchronize() covers this handler, and
	 * this CPU's lp_rec_cache entry stays this CPU's for the call.
	 */
	bit = ftrace_test_recursion_trylock(ip, parent_ip);
	if (WARN_ON_ONCE(bit < 0))
		return;
	/*
	 * livepatch_core's redirect::settled(), steps 1 and 2 of the decision, with its orderings:
	 * the top pairs with the core's release push/unlink of a node, the flag with the engine's
	 * release stores of it (which follow its writes of every task's word). Outside a
	 * transition of this function every task runs the top variant (entry 0: a nop, the
	 * original) and no task word is read; in one, Rust finishes the decision.
	 */
	top = smp_load_acquire(&hook->fslot->top);
	if (!top)
		target = 0;
	else if (!smp_load_acquire(&top->transition))
		target = top->entry;
	else
		target = lp_rs_redirect_in_transition(top, current, this_cpu_read(lp_rec_cache), parent_ip);
	if (target)
		ftrace_regs_set_instruction_pointer(fregs, target);
	ftrace_test_recursion_unlock(bit);
}

int lp_shim_hook_install(u32 slot, unsigned long ip, const void *fslot)
{
	struct lp_hook *hook;
	int ret;

	if (slot >= LP_MAX_HOOKS)
		return -ENOSPC;
	hook = &lp_hooks[slot];
	if (hook->registered)
		return -EBUSY;
	memset(&hook->ops, 0, sizeof(hook->ops));
	hook->ops.func = lp_ftrace_handler;
	/*
	 * As kernel/livepatch/patch.c: IPMODIFY (we change the ip), DYNAMIC (module memory),
	 * PERMANENT (the ftrace_enabled sysctl cannot switch the redirect off while it is on).
	 */
	hook->ops.flags = FTRACE_OPS_FL_DYNAMIC | FTRACE_OPS_FL_PERMANENT |
#ifndef CONFIG_HAVE_DYNAMIC_FTRACE_WITH_ARGS
			  FTRACE_OPS_FL_SAVE_REGS |
#endif
			  FTRACE_OPS_FL_IPMODIFY;
	hook->ip = ip;
	hook->slot = slot;
	hook->fslot = fslot;
	/* Abort on a filter error: unfiltered ops would trace every function. */
	ret = ftrace_set_filter_ip(&hook->ops, ip, 0, 0);
	if (ret)
		return ret;
	ret = register_ftrace_function(&hook->ops);
	if (ret) {
		ftrace_set_filter_ip(&hook->ops, ip, 1, 0);
		return ret;
	}
	hook->registered = true;
	return 0;
}

/*
 * Where the fentry call of the function at @func returns to, as an offset from @func: the call
 * is the first instruction, or follows the 4-byte ENDBR64 (or its sealed poison) with IBT.
 */
u32 lp_shim_fentry_ret_offset(unsigned long func)
{
	u32 insn;

	if (get_kernel_nofault(insn, (u32 *)func))
		return 0;
	return (is_endbr(insn) ? ENDBR_INSN_SIZE : 0) + MCOUNT_INSN_SIZE;
}

int lp_shim_hook_remove(u32 slot)
{
	struct lp_hook *hook;
	int ret;

	if (slot >= LP_MAX_HOOKS || !lp_hooks[slot].registered)
		return -ENOENT;
	hook = &lp_hooks[slot];
	/* Waits for handlers in flight (and, with FL_DYNAMIC, for trampolines to be unused). */
	ret = unregister_ftrace_function(&hook->ops);
	if (ret)
		return ret;
	ftrace_set_filter_ip(&hook->ops, hook->ip, 1, 0);
	ftrace_free_filter(&hook->ops);
	hook->registered = false;
	return 0;
}

/*
 * The cond_resched() switch point: a plain ftrace hook on __cond_resched(), registered only
 * while a transition is in progress (as the kernel enables klp_cond_resched() only then). A
 * task calling cond_resched() checks its own stack there and switches if it is clean -- the
 * kernel's klp_sched_try_switch() -> klp_try_switch_task(current). CPU-bound kthreads, which
 * are always running or runnable and so can be neither pinned nor reliably caught outside
 * patched code by an interrupt, switch here.
 */
static struct ftrace_ops lp_resched_ops;
static unsigned long lp_resched_ip;

static void notrace lp_resched_handler(unsigned long ip, unsigned long parent_ip,
				       struct ftrace_ops *fops, struct ftrace_regs *fregs)
{
	int bit = ftrace_test_recursion_trylock(ip, parent_ip);

	if (bit < 0)
		return;
	lp_rs_cond_resched();
	ftrace_test_recursion_unlock(bit);
}

int lp_shim_resched_hook(bool on)
{
	unsigned long size;
	int ret;

	if (!on) {
		if (!lp_resched_ip)
			return 0;
		unregister_ftrace_function(&lp_resched_ops);
		ftrace_free_filter(&lp_resched_ops);
		lp_resched_ip = 0;
		return 0;
	}
	if (lp_resched_ip)
		return 0;
	ret = lp_shim_resolve("__cond_resched", false, &lp_resched_ip, &size);
	if (ret)
		return ret;
	memset(&lp_resched_ops, 0, sizeof(lp_resched_ops));
	lp_resched_ops.func = lp_resched_handler;
	lp_resched_ops.flags = FTRACE_OPS_FL_DYNAMIC;
	ret = ftrace_set_filter_ip(&lp_resched_ops, lp_resched_ip, 0, 0);
	if (!ret)
		ret = register_ftrace_function(&lp_resched_ops);
	if (ret) {
		ftrace_free_filter(&lp_resched_ops);
		lp_resched_ip = 0;
	}
	return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Tasks                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static DEFINE_MUTEX(lp_engine_mutex);

void lp_shim_lock(void)
{
	mutex_lock(&lp_engine_mutex);
}

/*
 * Whether the current task holds the engine lock (a callback the engine runs). The owner word
 * of a (non-RT) mutex is the owning task with flags in its low 3 bits (kernel/locking/mutex.c).
 */
bool lp_shim_engine_locked(void)
{
	unsigned long owner = atomic_long_read(&lp_engine_mutex.owner);

	return (struct task_struct *)(owner & ~0x07UL) == current;
}

void lp_shim_unlock(void)
{
	mutex_unlock(&lp_engine_mutex);
}

/*
 * Every CPU has handled a work item queued after this call began, i.e. scheduled at least
 * once: every preempt-disabled section in flight when we started -- an ftrace handler, even
 * one running where RCU is not watching -- has ended. This is schedule_on_each_cpu() (not
 * exported), which the kernel's klp_synchronize_transition() uses for the same reason.
 */
static DEFINE_MUTEX(lp_sync_mutex);
static DEFINE_PER_CPU(struct work_struct, lp_sync_work);

static void lp_sync_fn(struct work_struct *w)
{
}

void lp_shim_sync_all_cpus(void)
{
	int cpu;

	mutex_lock(&lp_sync_mutex);
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		INIT_WORK(per_cpu_ptr(&lp_sync_work, cpu), lp_sync_fn);
		queue_work_on(cpu, system_wq, per_cpu_ptr(&lp_sync_work, cpu));
	}
	for_each_online_cpu(cpu)
		flush_work(per_cpu_ptr(&lp_sync_work, cpu));
	cpus_read_unlock();
	mutex_unlock(&lp_sync_mutex);
}

/* ------------------------------------------------------------------------------------------ */
/* Task records: each task's 4-byte patch state, created at fork, gone with the task_struct     */
/* ------------------------------------------------------------------------------------------ */

/*
 * A module cannot add a field to task_struct, so each task's word lives in a record found by
 * the task's address. Records exist while tracking is on: from the first redirect hook (the
 * engine's first Tracer::install starts tracking before registering its own ftrace_ops) until
 * no hook is left and no transition runs (control.rs, stop_tracking_if_unhooked()). While it
 * is off no handler reads a word and no transition can switch a task, so every task runs the
 * universe UNTRACKED holds and a fork or free then has nothing to record:
 *
 *  - created for every existing task (and each possible CPU's idle task) when tracking starts
 *    (lp_shim_tracking()), for each child in wake_up_new_task() -- which its parent runs before
 *    the child first runs -- with the parent's word, and for any task found without one (a
 *    failed allocation at fork, counted) by lp_shim_tasks_populate() before a walk may end
 *    (lp_shim_tasks_walk_end());
 *  - removed in __put_task_struct(), i.e. when the task_struct itself is freed: after the
 *    task's last instruction, including the tail of do_exit() after __unhash_process() that
 *    the task list no longer shows. So a record never outlives its task and a task_struct
 *    address reused by a new task never finds an old record;
 *  - freed only after lp_shim_sync_all_cpus(): a handler may be walking a hash chain through
 *    it, with preemption disabled.
 *
 * The redirect handler finds current's record through a per-CPU cache first (lp_rec_cache: the
 * last record it found on this CPU, which the handler reads with this_cpu_read() and hands to
 * Rust's tasks::cached_word()): a hit is the cached record whose task is current -- one load of
 * the entry, one of the record's task beside the word. A miss (the first call in a transition
 * after a context switch) looks the hash up and stores the record found
 * (lp_shim_task_rec_cache()). Why a stale entry is never used:
 *
 *  - removal clears the record's task (lp_rec_remove(), under lp_table_lock, in
 *    __put_task_struct() before the task_struct is freed). A task_struct address reused by a
 *    new task is allocated after that, and the new task runs after that, so its handler reads
 *    NULL there, not its own address: it misses and finds its own record;
 *  - a record is freed only after: (1) a grace period (no handler that may have found it in
 *    the hash is still running, and none can find it any more, so none will store it again);
 *    (2) every CPU's entry holding a removed record is cleared (lp_rec_cache_forget()); (3) a
 *    second grace period (no handler that loaded such an entry before (2) still runs). Reaps
 *    are serialised (lp_reap_mutex), so (2) reads only records no other reaper frees.
 *
 * Readers (the ftrace handler, task work, cond_resched) walk a hash chain without a lock;
 * writers hold lp_table_lock. The engine walks all records in order (lp_tasks) in batches,
 * with a cursor node left in the list between batches: O(N) per pass, no task missed, and a
 * child forked meanwhile is appended behind the cursor, so the same walk visits it after its
 * parent (the engine's retarget and reversal therefore reach every child).
 * There is no fixed capacity: records are kmalloc'd, the hash has 2^16 chains.
 */
struct lp_task_rec {
	u32 word;		/* the core's TaskPatchState (a Rust AtomicU32) */
	u8 kicks;		/* task works queued (a Rust AtomicU8) */
	struct task_struct *task;
	struct hlist_node hash;	/* lp_buckets chain */
	struct list_head list;	/* lp_tasks (or lp_dead once removed) */
};

#define LP_HASH_BITS 16
static struct hlist_head *lp_buckets;
static LIST_HEAD(lp_tasks);
static LIST_HEAD(lp_dead);
static struct list_head lp_cursor = LIST_HEAD_INIT(lp_cursor);
static DEFINE_RAW_SPINLOCK(lp_table_lock);
static u32 lp_nr_records;
static atomic_t lp_untracked = ATOMIC_INIT(0);
static bool lp_tracking;

static void lp_reap_fn(struct work_struct *w);
static DECLARE_WORK(lp_reap_work, lp_reap_fn);
static DEFINE_MUTEX(lp_reap_mutex);

/* Rust reads the record's word, kicks and task (tasks.rs TaskRec) at these offsets. */
static_assert(offsetof(struct lp_task_rec, word) == 0);
static_assert(offsetof(struct lp_task_rec, kicks) == 4);
static_assert(offsetof(struct lp_task_rec, task) == 8);

/* The core's layout as the redirect handler reads it (shim.h; shim.rs, control.rs). */
static_assert(offsetof(struct lp_func_slot, top) == LP_SLOT_TOP_OFFSET);
static_assert(offsetof(struct lp_func_node, transition) == LP_NODE_TRANSITION_OFFSET);
static_assert(offsetof(struct lp_func_node, entry) == LP_NODE_ENTRY_OFFSET);
static_assert(sizeof(bool) == 1);

static notrace struct lp_task_rec *lp_rec_find(struct task_struct *t)
{
	struct hlist_node *n;

	/* Dependency-ordered after hlist_add_head_rcu()'s rcu_assign_pointer(). */
	for (n = READ_ONCE(lp_buckets[hash_ptr(t, LP_HASH_BITS)].first); n; n = READ_ONCE(n->next)) {
		struct lp_task_rec *r = hlist_entry(n, struct lp_task_rec, hash);

		if (READ_ONCE(r->task) == t)
			return r;
	}
	return NULL;
}

/*
 * The redirect handler's cache miss (Rust's tasks::current_word_refill(), called from
 * lp_rs_redirect_in_transition() when this CPU's lp_rec_cache entry does not hold current's
 * record): current's record, stored in this CPU's entry, or NULL (not cached). Only from the
 * ftrace handler, preemption disabled (its recursion lock) from its read of the entry on.
 */
notrace struct lp_task_rec *lp_shim_task_rec_cache(struct task_struct *curr)
{
	struct lp_task_rec *r;

	if (unlikely(!READ_ONCE(lp_buckets)))
		return NULL;
	r = lp_rec_find(curr);
	if (r)
		this_cpu_write(lp_rec_cache, r);
	return r;
}

/*
 * The record of @t, or NULL. Lock-free. The caller keeps it valid: it is current's own, or the
 * caller holds a reference on @t (a record lives as long as its task_struct).
 */
notrace struct lp_task_rec *lp_shim_task_rec(struct task_struct *t)
{
	struct lp_task_rec *r;

	if (unlikely(!READ_ONCE(lp_buckets)))
		return NULL;
	/* The chain may pass records being freed: see lp_reap_fn(). */
	preempt_disable_notrace();
	r = lp_rec_find(t);
	preempt_enable_notrace();
	return r;
}

static void lp_rec_insert(struct lp_task_rec *r)
{
	lockdep_assert_held(&lp_table_lock);
	hlist_add_head_rcu(&r->hash, &lp_buckets[hash_ptr(r->task, LP_HASH_BITS)]);
	list_add_tail(&r->list, &lp_tasks);
	lp_nr_records++;
}

static void lp_rec_remove(struct lp_task_rec *r)
{
	lockdep_assert_held(&lp_table_lock);
	hlist_del_rcu(&r->hash);
	/* A cached entry pointing here no longer matches any task (see "Task records"). */
	WRITE_ONCE(r->task, NULL);
	list_move_tail(&r->list, &lp_dead);
	lp_nr_records--;
}

/*
 * Clears every CPU's lp_rec_cache entry that holds a removed record (task NULL). The caller
 * holds lp_reap_mutex: every record an entry holds is then live or removed but not yet freed.
 */
static void lp_rec_cache_forget(void)
{
	int cpu;

	lockdep_assert_held(&lp_reap_mutex);
	for_each_possible_cpu(cpu) {
		struct lp_task_rec **entry = per_cpu_ptr(&lp_rec_cache, cpu);
		struct lp_task_rec *r = READ_ONCE(*entry);

		/* cmpxchg: the CPU may be storing a live record meanwhile; keep that one. */
		if (r && !READ_ONCE(r->task))
			cmpxchg(entry, r, NULL);
	}
}

static void lp_reap_fn(struct work_struct *w)
{
	struct lp_task_rec *r, *tmp;
	unsigned long flags;
	LIST_HEAD(batch);

	mutex_lock(&lp_reap_mutex);
	raw_spin_lock_irqsave(&lp_table_lock, flags);
	list_splice_init(&lp_dead, &batch);
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
	if (list_empty(&batch))
		goto out;
	/* (1), (2), (3) of "Task records": no handler can reach a record of the batch after. */
	lp_shim_sync_all_cpus();
	lp_rec_cache_forget();
	lp_shim_sync_all_cpus();
	list_for_each_entry_safe(r, tmp, &batch, list)
		kfree(r);
out:
	mutex_unlock(&lp_reap_mutex);
}

/* wake_up_new_task(child): the child inherits its parent's word before it first runs. */
static struct ftrace_ops lp_fork_ops, lp_free_ops;

/*
 * Fault injection (as failslab, which the e2e kernel does not build): the next N task-record
 * allocations fail -- the fork hook's GFP_ATOMIC ones and the populate pass's GFP_KERNEL ones
 * (a pass stops at its first failure). Decremented under lp_table_lock (lp_inject_failure());
 * /sys/module/livepatch_rs/parameters/fail_task_records (root only).
 */
static unsigned int lp_fail_task_records;
module_param_named(fail_task_records, lp_fail_task_records, uint, 0600);
MODULE_PARM_DESC(fail_task_records, "fault injection: fail the next N task-record allocations (fork hook, populate pass)");

/* Whether to fail this allocation (consumes one injected failure). lp_table_lock held. */
static bool lp_inject_failure(void)
{
	lockdep_assert_held(&lp_table_lock);
	if (!READ_ONCE(lp_fail_task_records))
		return false;
	WRITE_ONCE(lp_fail_task_records, lp_fail_task_records - 1);
	return true;
}

static void notrace lp_fork_handler(unsigned long ip, unsigned long parent_ip,
				    struct ftrace_ops *fops, struct ftrace_regs *fregs)
{
	struct task_struct *child = (struct task_struct *)ftrace_regs_get_argument(fregs, 0);
	struct lp_task_rec *r, *parent;
	unsigned long flags;
	int bit = ftrace_test_recursion_trylock(ip, parent_ip);

	if (bit < 0)
		return;
	r = kmalloc(sizeof(*r), GFP_ATOMIC | __GFP_NOWARN);
	raw_spin_lock_irqsave(&lp_table_lock, flags);
	if (r && lp_inject_failure()) {
		kfree(r);
		r = NULL;
	}
	if (!lp_rec_find(child)) {
		if (r) {
			r->task = child;
			r->kicks = 0;
			/*
			 * Under lp_table_lock: the engine's walk collects batches under it, and
			 * the child goes behind the cursor, so a retarget of the parent that this
			 * read misses reaches the child later in the same walk.
			 */
			parent = lp_rec_find(current);
			lp_rs_inherit(parent ? &parent->word : NULL, &r->word);
			lp_rec_insert(r);
			r = NULL;
		} else {
			/* Counted; the engine creates its record before it may complete. */
			atomic_inc(&lp_untracked);
		}
	}
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
	kfree(r);
	ftrace_test_recursion_unlock(bit);
}

/* __put_task_struct(t): the task_struct is about to be freed; so is its record. */
static void notrace lp_free_handler(unsigned long ip, unsigned long parent_ip,
				    struct ftrace_ops *fops, struct ftrace_regs *fregs)
{
	struct task_struct *t = (struct task_struct *)ftrace_regs_get_argument(fregs, 0);
	struct lp_task_rec *r;
	unsigned long flags;
	int bit = ftrace_test_recursion_trylock(ip, parent_ip);

	if (bit < 0)
		return;
	raw_spin_lock_irqsave(&lp_table_lock, flags);
	r = lp_rec_find(t);
	if (r)
		lp_rec_remove(r);
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
	if (r)
		schedule_work(&lp_reap_work);
	ftrace_test_recursion_unlock(bit);
}

static int lp_observer(struct ftrace_ops *ops, ftrace_func_t fn, const char *sym, bool on)
{
	unsigned long ip, size;
	int ret;

	if (!on) {
		unregister_ftrace_function(ops);
		ftrace_free_filter(ops);
		return 0;
	}
	ret = lp_shim_resolve(sym, false, &ip, &size);
	if (ret)
		return ret;
	memset(ops, 0, sizeof(*ops));
	ops->func = fn;
	/*
	 * PERMANENT: while records are tracked, the ftrace_enabled sysctl must not silence these
	 * hooks (a missed free would leave a record for a reused task_struct address). So with
	 * ftrace_enabled=0 tracking cannot start (-EBUSY): the first redirect hook fails with it,
	 * where and as the kernel's klp_patch_func() fails for its own PERMANENT ops.
	 */
	ops->flags = FTRACE_OPS_FL_DYNAMIC | FTRACE_OPS_FL_PERMANENT;
	ret = ftrace_set_filter_ip(ops, ip, 0, 0);
	if (!ret)
		ret = register_ftrace_function(ops);
	if (ret)
		ftrace_free_filter(ops);
	return ret;
}

/*
 * Gives @t a record from @pool (of *@have records) if it has none, with the word
 * lp_rs_inherit(NULL, ...) gives. Returns 1 if it needed one and the pool was empty.
 */
static int lp_rec_adopt(struct task_struct *t, struct list_head *pool, u32 *have)
{
	struct lp_task_rec *r;
	unsigned long flags;
	int missing = 0;

	raw_spin_lock_irqsave(&lp_table_lock, flags);
	if (!lp_rec_find(t)) {
		if (list_empty(pool)) {
			missing = 1;
		} else {
			r = list_first_entry(pool, struct lp_task_rec, list);
			list_del(&r->list);
			(*have)--;
			r->task = t;
			r->kicks = 0;
			lp_rs_inherit(NULL, &r->word);
			lp_rec_insert(r);
		}
	}
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
	return missing;
}

/*
 * Creates a record, with the word lp_rs_inherit(NULL, ...) gives, for every task on the task
 * list and each possible CPU's idle task that has none. Process context (allocates with GFP_KERNEL).
 */
int lp_shim_tasks_populate(void)
{
	struct task_struct *g, *t;
	struct lp_task_rec *r, *tmp;
	LIST_HEAD(pool);
	u32 want, have = 0;
	int cpu, missing = 0, ret = 0, untracked;
	unsigned long flags;
	bool injected;

	/*
	 * The count starts again from here (a fork failing during this pass is counted anew);
	 * if the pass fails, the forks it took are counted back: the walk must not end while
	 * they have no record (backend.rs, for_each_task()).
	 */
	untracked = atomic_xchg(&lp_untracked, 0);
	do {
		want = 0;
		rcu_read_lock();
		for_each_process_thread(g, t)
			want++;
		rcu_read_unlock();
		want += num_possible_cpus() + 16;
		for (; have < want; have++) {
			injected = false;
			if (unlikely(READ_ONCE(lp_fail_task_records))) {
				raw_spin_lock_irqsave(&lp_table_lock, flags);
				injected = lp_inject_failure();
				raw_spin_unlock_irqrestore(&lp_table_lock, flags);
			}
			r = injected ? NULL : kmalloc(sizeof(*r), GFP_KERNEL);
			if (!r) {
				atomic_add(untracked, &lp_untracked);
				ret = -ENOMEM;
				goto out;
			}
			list_add(&r->list, &pool);
		}
		missing = 0;
		rcu_read_lock();
		for_each_process_thread(g, t)
			missing += lp_rec_adopt(t, &pool, &have);
		rcu_read_unlock();
		/*
		 * Every possible CPU's, as klp_try_complete_transition() visits them: a CPU brought
		 * online during a transition then runs an idle task the transition sees (its idle
		 * task exists from boot: idle_threads_init()).
		 */
		for_each_possible_cpu(cpu) {
			t = lp_shim_idle_task(cpu);
			if (t)
				missing += lp_rec_adopt(t, &pool, &have);
		}
	} while (missing);
out:
	list_for_each_entry_safe(r, tmp, &pool, list)
		kfree(r);
	return ret;
}

/*
 * How many possible CPUs' idle tasks have a record; *@possible: how many possible CPUs (the
 * stats attribute's diagnostic: every one must be tracked, online or not, or a CPU brought
 * online during a transition would run an idle task the transition cannot see).
 */
u32 lp_shim_idle_records(u32 *possible)
{
	u32 tracked = 0, n = 0;
	int cpu;

	for_each_possible_cpu(cpu) {
		struct task_struct *t = lp_shim_idle_task(cpu);

		n++;
		if (t && lp_shim_task_rec(t))
			tracked++;
	}
	*possible = n;
	return tracked;
}

/* Forks since the last populate whose record could not be allocated. */
int lp_shim_tasks_untracked(void)
{
	return atomic_read(&lp_untracked);
}

/*
 * The end of a walk over every record (backend.rs, for_each_task()): returns the forks since
 * the last populate whose record could not be allocated; when there are none, moves UNTRACKED
 * to the transition's target (lp_rs_untracked_settle()). Both under lp_table_lock, which the
 * fork hook holds when it counts a failed allocation and reads UNTRACKED for a new record, so
 * no task forked without a record has run UNTRACKED's universe when it changes: every such
 * child counted before has a record (the walk gives them records before it ends), and every
 * one after starts in the target universe -- with a fresh stack, so in either universe it is
 * consistent. Without this a child forked between the last walk and complete() clearing the
 * transition flags ran the start universe while its parent ran the target, and the completion
 * switched it whatever its stack held (the kernel's klp_copy_process() cannot fail).
 */
int lp_shim_tasks_walk_end(void)
{
	unsigned long flags;
	int n;

	raw_spin_lock_irqsave(&lp_table_lock, flags);
	n = atomic_read(&lp_untracked);
	if (!n)
		lp_rs_untracked_settle();
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
	return n;
}

u32 lp_shim_tasks_count(void)
{
	return READ_ONCE(lp_nr_records);
}

/*
 * Starts (@restart) or continues the engine's walk over all records: collects up to @max tasks
 * behind the cursor, each with a task reference held (a task whose last reference is already
 * gone never runs again and is skipped), and moves the cursor past them. Returns how many;
 * 0 means the walk is complete (the cursor leaves the list). The caller drops the references
 * with lp_shim_put_task().
 */
u32 lp_shim_tasks_next(bool restart, u32 max, struct task_struct **tasks, struct lp_task_rec **recs)
{
	struct list_head *pos;
	unsigned long flags;
	u32 n = 0;

	raw_spin_lock_irqsave(&lp_table_lock, flags);
	if (restart) {
		list_del_init(&lp_cursor);
		list_add(&lp_cursor, &lp_tasks);
	} else if (list_empty(&lp_cursor)) {
		raw_spin_unlock_irqrestore(&lp_table_lock, flags);
		return 0;
	}
	for (pos = lp_cursor.next; n < max && pos != &lp_tasks; pos = pos->next) {
		struct lp_task_rec *r = list_entry(pos, struct lp_task_rec, list);

		if (refcount_inc_not_zero(&r->task->usage)) {
			tasks[n] = r->task;
			recs[n] = r;
			n++;
		}
	}
	list_del_init(&lp_cursor);
	if (n)
		list_add_tail(&lp_cursor, pos);
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
	return n;
}

void lp_shim_put_task(struct task_struct *t)
{
	put_task_struct(t);
}

/*
 * Tracking on: the fork and free hooks, then a record for every task (a fork between the two
 * is caught by either). Called before each redirect hook is registered (a no-op once on), so
 * every task has its record before any handler can read one. Off (no hook left, no
 * transition): hooks gone, every record freed.
 */
int lp_shim_tracking(bool on)
{
	struct lp_task_rec *r, *tmp;
	unsigned long flags;
	int ret;

	if (on == lp_tracking)
		return 0;
	if (!on) {
		lp_observer(&lp_fork_ops, NULL, NULL, false);
		lp_observer(&lp_free_ops, NULL, NULL, false);
		raw_spin_lock_irqsave(&lp_table_lock, flags);
		list_del_init(&lp_cursor);
		list_for_each_entry_safe(r, tmp, &lp_tasks, list)
			lp_rec_remove(r);
		raw_spin_unlock_irqrestore(&lp_table_lock, flags);
		lp_tracking = false;
		lp_reap_fn(NULL);
		return 0;
	}
	if (!lp_buckets) {
		struct hlist_head *b = kvcalloc(1 << LP_HASH_BITS, sizeof(*b), GFP_KERNEL);

		if (!b)
			return -ENOMEM;
		WRITE_ONCE(lp_buckets, b);
	}
	ret = lp_observer(&lp_free_ops, lp_free_handler, "__put_task_struct", true);
	if (ret)
		return ret;
	ret = lp_observer(&lp_fork_ops, lp_fork_handler, "wake_up_new_task", true);
	if (ret) {
		lp_observer(&lp_free_ops, NULL, NULL, false);
		return ret;
	}
	lp_tracking = true;
	ret = lp_shim_tasks_populate();
	if (ret)
		lp_shim_tracking(false);
	return ret;
}

/* Module exit: nothing tracked any more (no patch is registered); free the hash. */
void lp_shim_tasks_exit(void)
{
	lp_shim_tracking(false);
	flush_work(&lp_reap_work);
	kvfree(lp_buckets);
	lp_buckets = NULL;
}

/*
 * Each CPU's idle task: not on the task list and not exported. idle_task() is resolved through
 * kallsyms (the same kprobe route as the patch targets) and called.
 */
struct task_struct *lp_shim_idle_task(u32 cpu)
{
	static struct task_struct *(*idle_task_fn)(int cpu);

	if (!idle_task_fn) {
		if (lp_find_kallsyms_lookup_name())
			return NULL;
		idle_task_fn = (void *)lp_kallsyms_lookup_name("idle_task");
		if (!idle_task_fn)
			return NULL;
	}
	return idle_task_fn(cpu);
}

bool lp_shim_task_running(struct task_struct *t)
{
	return t != current && READ_ONCE(t->on_cpu);
}

bool lp_shim_comm_of(s32 pid, char *buf)
{
	struct task_struct *g, *t;
	bool found = false;

	rcu_read_lock();
	for_each_process_thread(g, t) {
		if (t->pid == pid) {
			memcpy(buf, t->comm, TASK_COMM_LEN);
			buf[TASK_COMM_LEN - 1] = 0;
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

/* notrace: called from the ftrace handler (via the redirect). */
notrace struct task_struct *lp_shim_current(void)
{
	return current;
}

void lp_shim_task_info(struct task_struct *t, struct lp_task_info *info)
{
	info->pid = t->pid;
	info->tgid = t->tgid;
	info->cpu = task_cpu(t);
	info->kthread = !!(t->flags & PF_KTHREAD);
	/*
	 * PF_IDLE is set when the idle task first runs: not yet on a CPU never brought online.
	 * Idle tasks have pid 0, so every other task is decided without calling idle_task()
	 * (this runs for every task of every walk).
	 */
	info->idle = !!(t->flags & PF_IDLE) || t == &init_task ||
		     (t->pid == 0 && t == lp_shim_idle_task(task_cpu(t)));
	info->exiting = !!(t->flags & PF_EXITING) || t->exit_state;
	info->on_cpu = READ_ONCE(t->on_cpu);
	info->state = READ_ONCE(t->__state);
	info->start_time = t->start_time;
	memcpy(info->comm, t->comm, sizeof(info->comm));
	info->comm[sizeof(info->comm) - 1] = 0;
}

/*
 * Runs @fn with the idle task of @cpu if @cpu is offline, holding the CPU hotplug lock so that
 * it stays offline meanwhile; LP_PIN_BUSY if @cpu is online. An offline CPU's idle task is
 * parked in play_dead() (the hotplug lock's writer held it until the CPU reported dead) and
 * never returns into that stack: a CPU brought up again starts its idle task on a fresh one
 * (start_secondary(), cpu_startup_entry()). So until @cpu is back online the task runs no
 * code of the patched set, and @fn may switch it without a stack -- as the kernel's
 * klp_try_complete_transition() switches offline idle tasks at once, under cpus_read_lock().
 */
int lp_shim_offline_idle(u32 cpu, lp_pin_cb fn, void *ctx)
{
	struct task_struct *t;
	int ret = LP_PIN_BUSY;

	cpus_read_lock();
	if (cpu < nr_cpu_ids && cpu_possible(cpu) && !cpu_online(cpu)) {
		t = lp_shim_idle_task(cpu);
		if (t)
			ret = fn(ctx, t);
	}
	cpus_read_unlock();
	return ret;
}

/*
 * Runs @fn while @t cannot run, as the kernel's task_call_func() does for a blocked task:
 * holding t->pi_lock blocks every try_to_wake_up() of @t. A task that is running, runnable,
 * waking or still switching out is refused (LP_PIN_BUSY), never inspected.
 */
int lp_shim_pin(struct task_struct *t, lp_pin_cb fn, void *ctx)
{
	unsigned long flags;
	unsigned int state;
	int ret = LP_PIN_BUSY;

	if (t == current)
		return fn(ctx, t);
	raw_spin_lock_irqsave(&t->pi_lock, flags);
	state = READ_ONCE(t->__state);
	/* Pairs with the barriers of __schedule()/ttwu, as in task_call_func(). */
	smp_rmb();
	if (state != TASK_RUNNING && state != TASK_WAKING && !READ_ONCE(t->on_rq) &&
	    !smp_load_acquire(&t->on_cpu))
		ret = fn(ctx, t);
	raw_spin_unlock_irqrestore(&t->pi_lock, flags);
	return ret;
}

/*
 * Reliable walk, as arch_stack_walk_reliable() (arch/x86/kernel/stacktrace.c) with the ORC
 * unwinder: stops successfully at user-mode registers or at the end of a kthread's stack, and
 * fails on an unknown return address or an unwinder error. @t is current or pinned.
 */
int lp_shim_walk(struct task_struct *t, lp_frame_cb cb, void *ctx)
{
	struct unwind_state state;
	struct pt_regs *regs;
	unsigned long addr;
	int r;

	if (t != current && !READ_ONCE(t->stack))
		return LP_WALK_NO_STACK;
	for (unwind_start(&state, t, NULL, NULL); !unwind_done(&state) && !unwind_error(&state);
	     unwind_next_frame(&state)) {
		regs = unwind_get_entry_regs(&state, NULL);
		if (regs && user_mode(regs))
			return LP_WALK_OK;
		addr = unwind_get_return_address(&state);
		if (!addr)
			return LP_WALK_UNRELIABLE;
		r = cb(ctx, addr);
		if (r != LP_WALK_OK)
			return r;
	}
	return unwind_error(&state) ? LP_WALK_UNRELIABLE : LP_WALK_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Switch points and kicks                                                                     */
/* ------------------------------------------------------------------------------------------ */

static atomic_t lp_works_pending = ATOMIC_INIT(0);

struct lp_task_work {
	struct callback_head cb;
	bool signal;
};

/*
 * Runs in the task itself on its way back to user mode (or in its exit path): no kernel frame
 * of the task is below this one, so this is a switch point. Each queued work holds a module
 * reference: the module cannot be unloaded while a callback is pending. The reference is
 * dropped with preemption disabled, so the grace period in free_module() also covers the
 * instructions that return from here.
 */
static void lp_task_work_fn(struct callback_head *head)
{
	struct lp_task_work *w = container_of(head, struct lp_task_work, cb);

	/*
	 * Preemption disabled, as for the kernel's klp_update_patch_state() and
	 * __klp_sched_try_switch(): the engine's grace period (lp_shim_synchronize(), in a
	 * reversal and in lp_reap_fn()) must wait for this check. Preempted here (CONFIG_PREEMPT),
	 * the check could read its word before two reversals and the away code between them, and
	 * its compare-and-swap would have succeeded on the word come back to the same state and
	 * target (the core's generation in the word now refuses it too:
	 * livepatch-core/tests/stale_self_check.rs; a reversal unregisters no ftrace ops, so no
	 * RCU-tasks grace period waits for it either); and stopping tracking could free current's
	 * record while this callback still uses it.
	 * From do_exit() the task still has kernel frames: not a switch point there.
	 */
	preempt_disable();
	lp_rs_exit_to_user(current, w->signal, !!(current->flags & PF_EXITING));
	preempt_enable();
	kfree(w);
	preempt_disable();
	atomic_dec(&lp_works_pending);
	module_put(THIS_MODULE);
	preempt_enable();
}

/* Queues the exit-to-user switch for a user task; @signal also kicks it out of a sleep. */
int lp_shim_kick_user(struct task_struct *t, bool signal)
{
	struct lp_task_work *w;
	int ret;

	if (!try_module_get(THIS_MODULE))
		return -ENODEV;
	w = kmalloc(sizeof(*w), GFP_ATOMIC);
	if (!w) {
		module_put(THIS_MODULE);
		return -ENOMEM;
	}
	init_task_work(&w->cb, lp_task_work_fn);
	w->signal = signal;
	atomic_inc(&lp_works_pending);
	ret = task_work_add(t, &w->cb, signal ? TWA_SIGNAL : TWA_RESUME);
	if (ret) {
		atomic_dec(&lp_works_pending);
		kfree(w);
		module_put(THIS_MODULE);
	}
	return ret;
}

int lp_shim_works_pending(void)
{
	return atomic_read(&lp_works_pending);
}

/* Wakes a kthread that sleeps interruptibly (a spurious wakeup it must tolerate anyway). */
void lp_shim_wake(struct task_struct *t)
{
	if (READ_ONCE(t->__state) & TASK_INTERRUPTIBLE)
		wake_up_process(t);
}

struct lp_cpu_call {
	lp_cpu_cb fn;
	void *ctx;
};

static void lp_on_cpu(void *info)
{
	struct lp_cpu_call *c = info;

	c->fn(c->ctx, current, smp_processor_id());
}

struct lp_cpu_timer {
	struct hrtimer timer;
	struct lp_cpu_call call;
	struct completion done;
};

static enum hrtimer_restart lp_cpu_timer_fn(struct hrtimer *timer)
{
	struct lp_cpu_timer *t = container_of(timer, struct lp_cpu_timer, timer);

	lp_on_cpu(&t->call);
	complete(&t->done);
	return HRTIMER_NORESTART;
}

/* How long the caller sleeps before its own CPU is interrupted (see lp_shim_on_cpu()). */
#define LP_LOCAL_PASS_DELAY_NS (200 * NSEC_PER_USEC)

/*
 * Runs @fn on @cpu from hard interrupt context, with the task the interrupt found running
 * there (current), and waits for it.
 *
 * Another CPU is interrupted at once with an IPI (smp_call_function_single()). The caller's own
 * CPU cannot be handled that way: an IPI to oneself runs in place, and its "current" would be
 * the caller (the engine's worker), never the task the pass is there to check. So the caller
 * arms a hard, pinned hrtimer on its CPU and sleeps; the timer then interrupts whatever the CPU
 * runs meanwhile -- a CPU-bound kthread, a user task, or the idle task.
 */
int lp_shim_on_cpu(u32 cpu, lp_cpu_cb fn, void *ctx)
{
	struct lp_cpu_timer t = { .call = { fn, ctx } };
	int ret;

	preempt_disable();
	if (cpu != smp_processor_id()) {
		ret = smp_call_function_single(cpu, lp_on_cpu, &t.call, 1);
		preempt_enable();
		return ret;
	}
	init_completion(&t.done);
	hrtimer_init_on_stack(&t.timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
	t.timer.function = lp_cpu_timer_fn;
	hrtimer_start(&t.timer, ns_to_ktime(LP_LOCAL_PASS_DELAY_NS), HRTIMER_MODE_REL_PINNED_HARD);
	preempt_enable();
	wait_for_completion(&t.done);
	/* The callback completed; make sure it has also returned before the frame goes. */
	hrtimer_cancel(&t.timer);
	destroy_hrtimer_on_stack(&t.timer);
	return 0;
}

u32 lp_shim_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

bool lp_shim_cpu_online(u32 cpu)
{
	return cpu_online(cpu);
}

int lp_shim_stop_machine(int (*fn)(void *), void *ctx)
{
	return stop_machine(fn, ctx, NULL);
}

/*
 * Every switch point a task runs on itself (the task-work callback, the cond_resched() hook)
 * reads its word, walks its stack and compare-and-swaps from the word it read: it must run in
 * a section lp_shim_synchronize() waits for -- preemption disabled, as the kernel's
 * klp_update_patch_state() and __klp_sched_try_switch() -- or a reversal's grace period does
 * not keep the check from spanning two reversals, after which the word is back to the state
 * and target it read while the code it compared the stack with was the other direction's (the
 * contract of livepatch_core's Live::task_work; the core's generation in the word refuses that
 * switch too: livepatch-core/tests/stale_self_check.rs). Warns once otherwise (the e2e
 * kernel has CONFIG_BUG, and its script fails on the "WARNING:"). preemptible() is 0 on a
 * kernel without CONFIG_PREEMPT_COUNT, where nothing preempts the check.
 */
void lp_shim_assert_switch_section(void)
{
	WARN_ONCE(preemptible(), "livepatch_rs: a switch point runs preemptible");
}

void lp_shim_synchronize(void)
{
	/*
	 * Handlers run with preemption disabled (ftrace_test_recursion_trylock()), so an RCU grace
	 * period covers those that run where RCU is watching (expedited: forced with IPIs rather
	 * than waiting for every CPU to pass a quiescent state, tens of ms under TCG). A handler of
	 * a function called where RCU is not watching (idle entry, early exception paths) is not
	 * covered by RCU; it is by every CPU scheduling once -- klp_synchronize_transition()'s
	 * schedule_on_each_cpu().
	 */
	synchronize_rcu_expedited();
	lp_shim_sync_all_cpus();
}

/*
 * Module exit: after the last reference is gone, a task may still be on the last instructions
 * of lp_task_work_fn() (after its module_put()), possibly preempted there on a preemptible
 * kernel. RCU-tasks waits until every task has passed a voluntary context switch or user mode,
 * so none is still (or will again be) executing module text; on a kernel without preemption
 * it is synchronize_rcu(), which covers the preempt-disabled tail.
 */
void lp_shim_exit_barrier(void)
{
	synchronize_rcu_tasks();
}

void lp_shim_taint(void)
{
	/* As klp_enable_patch(): the kernel now runs code it was not built with. */
	add_taint(TAINT_LIVEPATCH, LOCKDEP_STILL_OK);
}

u64 lp_shim_now_ns(void)
{
	return ktime_get_ns();
}

void lp_shim_msleep(u32 ms)
{
	msleep(ms);
}

void lp_shim_udelay(u32 us)
{
	udelay(us);
}

/* ------------------------------------------------------------------------------------------ */
/* Retry work                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void lp_retry_fn(struct work_struct *w)
{
	lp_rs_retry();
}

static DECLARE_DELAYED_WORK(lp_retry_work, lp_retry_fn);

void lp_shim_schedule_retry(u64 delay_ns)
{
	/* High priority: the sweep competes with the load it must switch. */
	mod_delayed_work(system_highpri_wq, &lp_retry_work, nsecs_to_jiffies(delay_ns));
}

void lp_shim_cancel_retry(void)
{
	cancel_delayed_work_sync(&lp_retry_work);
}

/* ------------------------------------------------------------------------------------------ */
/* sysfs: /sys/kernel/livepatch_rs/<patch>/...                                                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * The interface, shaped like the kernel's /sys/kernel/livepatch:
 *   /sys/kernel/livepatch_rs/<patch>/{enabled,transition,force,replace,stalls,stats}
 *   (patch modules' patches; livepatch_rs's own demo patches under livepatch_rs_builtin/)
 *   /sys/kernel/livepatch_rs/<patch>/<object>/patched
 *   /sys/kernel/livepatch_rs/<patch>/<object>/<function,sympos>/
 * Every show/store goes to Rust (lp_rs_attr_show/store) with the patch index, the attribute
 * and the object index. Permissions as the kernel's: enabled 0644, force 0200 (write-only),
 * the stall report 0400 (it names tasks), the rest 0444.
 */
#define LP_MAX_DIRS 32

struct lp_dir {
	struct kobject *patch;
	struct kobject *objs[LP_REG_OBJS];
	struct kobject *funcs[LP_REG_FUNCS];
	u32 nfuncs;
};

static struct kobject *lp_root;		/* patch modules' patches */
static struct kobject *lp_builtin_root;	/* livepatch_rs's own (demo) patches */
static struct lp_dir lp_dirs[LP_MAX_DIRS];

static ssize_t lp_kobj_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf);
static ssize_t lp_kobj_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf,
			     size_t count);

static struct kobj_attribute lp_kattrs[] = {
	[LP_ATTR_ENABLED] = __ATTR(enabled, 0644, lp_kobj_show, lp_kobj_store),
	[LP_ATTR_TRANSITION] = __ATTR(transition, 0444, lp_kobj_show, NULL),
	[LP_ATTR_FORCE] = __ATTR(force, 0200, NULL, lp_kobj_store),
	[LP_ATTR_STALLS] = __ATTR(stalls, 0400, lp_kobj_show, NULL),
	[LP_ATTR_STATS] = __ATTR(stats, 0444, lp_kobj_show, NULL),
	[LP_ATTR_REPLACE] = __ATTR(replace, 0444, lp_kobj_show, NULL),
	[LP_ATTR_PATCHED] = __ATTR(patched, 0444, lp_kobj_show, NULL),
};

/* Which patch (and object) a kobject is; handlers run only while it exists. */
static int lp_dir_of(struct kobject *kobj, u32 *patch, u32 *obj)
{
	u32 p, o;

	for (p = 0; p < LP_MAX_DIRS; p++) {
		if (READ_ONCE(lp_dirs[p].patch) == kobj) {
			*patch = p;
			*obj = 0;
			return 0;
		}
		for (o = 0; o < LP_REG_OBJS; o++) {
			if (READ_ONCE(lp_dirs[p].objs[o]) == kobj) {
				*patch = p;
				*obj = o;
				return 0;
			}
		}
	}
	return -ENOENT;
}

static ssize_t lp_kobj_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	u32 patch, obj, a = attr - lp_kattrs;

	if (lp_dir_of(kobj, &patch, &obj))
		return -ENOENT;
	return lp_rs_attr_show(patch, a | obj << 8, buf, PAGE_SIZE);
}

static ssize_t lp_kobj_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf,
			     size_t count)
{
	u32 patch, obj, a = attr - lp_kattrs;
	int ret;

	if (lp_dir_of(kobj, &patch, &obj))
		return -ENOENT;
	ret = lp_rs_attr_store(patch, a, buf, count);
	return ret < 0 ? ret : count;
}

/*
 * /proc/livepatch_rs_patch_state (0400): every task's patch state, one "<pid> <state>" line
 * each, the value /proc/<pid>/patch_state shows for the kernel's livepatch (-1 between
 * transitions, 0 unpatched, 1 patched). The task list is read under RCU; records are found
 * lock-free with preemption disabled (a removed record is freed only after every CPU has
 * scheduled once).
 */
static int lp_patch_state_show(struct seq_file *m, void *v)
{
	struct task_struct *g, *t;

	rcu_read_lock();
	preempt_disable();
	for_each_process_thread(g, t)
		seq_printf(m, "%d %d\n", task_pid_nr(t), lp_rs_task_patch_state(t));
	preempt_enable();
	rcu_read_unlock();
	return 0;
}

int lp_shim_patch_state_file(bool on)
{
	if (!on) {
		remove_proc_entry("livepatch_rs_patch_state", NULL);
		return 0;
	}
	if (!proc_create_single("livepatch_rs_patch_state", 0400, NULL, lp_patch_state_show))
		return -ENOMEM;
	return 0;
}

int lp_shim_dir_add(u32 patch, const char *name, bool builtin)
{
	static const int attrs[] = { LP_ATTR_ENABLED, LP_ATTR_TRANSITION, LP_ATTR_FORCE,
				     LP_ATTR_REPLACE, LP_ATTR_STALLS, LP_ATTR_STATS };
	struct kobject *kobj, **root = builtin ? &lp_builtin_root : &lp_root;
	int i, ret;

	if (!*root) {
		*root = kobject_create_and_add(builtin ? "livepatch_rs_builtin" : "livepatch_rs",
					       kernel_kobj);
		if (!*root)
			return -ENOMEM;
	}
	if (patch >= LP_MAX_DIRS || lp_dirs[patch].patch)
		return -EINVAL;
	kobj = kobject_create_and_add(name, *root);
	if (!kobj)
		return -ENOMEM;
	WRITE_ONCE(lp_dirs[patch].patch, kobj);
	for (i = 0; i < ARRAY_SIZE(attrs); i++) {
		ret = sysfs_create_file(kobj, &lp_kattrs[attrs[i]].attr);
		if (ret)
			return ret;	/* the caller removes the directory */
	}
	return 0;
}

int lp_shim_dir_add_object(u32 patch, u32 obj, const char *name)
{
	struct kobject *kobj;

	if (patch >= LP_MAX_DIRS || !lp_dirs[patch].patch || obj >= LP_REG_OBJS || lp_dirs[patch].objs[obj])
		return -EINVAL;
	kobj = kobject_create_and_add(name, lp_dirs[patch].patch);
	if (!kobj)
		return -ENOMEM;
	WRITE_ONCE(lp_dirs[patch].objs[obj], kobj);
	return sysfs_create_file(kobj, &lp_kattrs[LP_ATTR_PATCHED].attr);
}

/* As the kernel names it: "<function>,<sympos>", sympos 0 shown as 1. */
int lp_shim_dir_add_func(u32 patch, u32 obj, const char *name, unsigned long sympos)
{
	struct lp_dir *d;
	struct kobject *kobj;
	char buf[LP_REG_NAME + 24];

	if (patch >= LP_MAX_DIRS || obj >= LP_REG_OBJS)
		return -EINVAL;
	d = &lp_dirs[patch];
	if (!d->objs[obj] || d->nfuncs >= LP_REG_FUNCS)
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s,%lu", name, sympos ? sympos : 1);
	kobj = kobject_create_and_add(buf, d->objs[obj]);
	if (!kobj)
		return -ENOMEM;
	d->funcs[d->nfuncs++] = kobj;
	return 0;
}

/*
 * Removes one patch's directory. Removal waits for the files' handlers in progress, which
 * take the engine lock: never call it with the engine lock held, nor from a handler.
 */
int lp_shim_dir_remove(u32 patch)
{
	struct lp_dir *d;
	u32 i;

	if (patch >= LP_MAX_DIRS || !lp_dirs[patch].patch)
		return -ENOENT;
	d = &lp_dirs[patch];
	for (i = 0; i < d->nfuncs; i++)
		kobject_put(d->funcs[i]);
	for (i = 0; i < LP_REG_OBJS; i++) {
		if (d->objs[i]) {
			kobject_put(d->objs[i]);
			WRITE_ONCE(d->objs[i], NULL);
		}
	}
	kobject_put(d->patch);
	WRITE_ONCE(d->patch, NULL);
	d->nfuncs = 0;
	return 0;
}

static void lp_reap_dirs_fn(struct work_struct *w)
{
	lp_rs_reap();
}
static DECLARE_WORK(lp_reap_dirs_work, lp_reap_dirs_fn);

void lp_shim_queue_reap(void)
{
	schedule_work(&lp_reap_dirs_work);
}

void lp_shim_cancel_reap(void)
{
	cancel_work_sync(&lp_reap_dirs_work);
}

void lp_shim_dir_remove_all(void)
{
	u32 p;

	for (p = 0; p < LP_MAX_DIRS; p++)
		lp_shim_dir_remove(p);
	kobject_put(lp_root);
	lp_root = NULL;
	kobject_put(lp_builtin_root);
	lp_builtin_root = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Module reference: held while any patch is enabled or in transition                          */
/* ------------------------------------------------------------------------------------------ */

bool lp_shim_module_get(void)
{
	return try_module_get(THIS_MODULE);
}

void lp_shim_module_put(void)
{
	module_put(THIS_MODULE);
}

/* The engine's events, with the kernel's livepatch prefix (see control.rs). */
void lp_shim_klp_log(const char *msg, int len)
{
	printk(KERN_NOTICE "livepatch: %.*s\n", len, msg);
}

/* kernel-style logging from Rust without format strings crossing the boundary */
void lp_shim_log(int level, const char *msg, int len)
{
	if (level <= 3)
		pr_err("livepatch_rs: %.*s\n", len, msg);
	else
		pr_info("livepatch_rs: %.*s\n", len, msg);
}
