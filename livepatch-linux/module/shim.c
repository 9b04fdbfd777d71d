// SPDX-License-Identifier: GPL-2.0
/*
 * lp_shim.c - the thin C side of livepatch_rs.ko.
 *
 * Only what 6.12's Rust bindings cannot express lives here: struct layouts (ftrace_ops,
 * task_struct fields, unwind_state, kprobe), inline functions and macros (unwind_start,
 * unwind_get_entry_regs, user_mode, for_each_process_thread, rcu_read_lock, raw_spin_lock on
 * pi_lock, get/put_task_struct, debugfs file ops). Every decision is made in Rust; each function
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
#include <linux/timekeeping.h>
#include <linux/stop_machine.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/hrtimer.h>
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
	unsigned long ip;
	u32 slot;
	bool registered;
};

static struct lp_hook lp_hooks[LP_MAX_HOOKS];

static void notrace lp_ftrace_handler(unsigned long ip, unsigned long parent_ip,
				      struct ftrace_ops *fops, struct ftrace_regs *fregs)
{
	struct lp_hook *hook = container_of(fops, struct lp_hook, ops);
	unsigned long target;
	int bit;

	/* Disables preemption: the grace period of lp_shim_synchronize() covers this handler. */
	bit = ftrace_test_recursion_trylock(ip, parent_ip);
	if (WARN_ON_ONCE(bit < 0))
		return;
	target = lp_rs_redirect(hook->slot, ip, parent_ip);
	if (target)
		ftrace_regs_set_instruction_pointer(fregs, target);
	ftrace_test_recursion_unlock(bit);
}

int lp_shim_hook_install(u32 slot, unsigned long ip)
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
	/* As kernel/livepatch/patch.c: IPMODIFY (we change the ip), DYNAMIC (module memory). */
	hook->ops.flags = FTRACE_OPS_FL_DYNAMIC |
#ifndef CONFIG_HAVE_DYNAMIC_FTRACE_WITH_ARGS
			  FTRACE_OPS_FL_SAVE_REGS |
#endif
			  FTRACE_OPS_FL_IPMODIFY;
	hook->ip = ip;
	hook->slot = slot;
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
 * Fork inheritance: a plain (non-IPMODIFY) ftrace hook on wake_up_new_task(p), which the parent
 * calls before the child first runs, lets the child inherit the parent's universe.
 */
static struct ftrace_ops lp_fork_ops;
static unsigned long lp_fork_ip;

static void notrace lp_fork_handler(unsigned long ip, unsigned long parent_ip,
				    struct ftrace_ops *fops, struct ftrace_regs *fregs)
{
	int bit = ftrace_test_recursion_trylock(ip, parent_ip);

	if (bit < 0)
		return;
	lp_rs_fork(current, (struct task_struct *)ftrace_regs_get_argument(fregs, 0));
	ftrace_test_recursion_unlock(bit);
}

int lp_shim_fork_hook(bool on)
{
	unsigned long size;
	int ret;

	if (!on) {
		if (!lp_fork_ip)
			return 0;
		unregister_ftrace_function(&lp_fork_ops);
		ftrace_free_filter(&lp_fork_ops);
		lp_fork_ip = 0;
		return 0;
	}
	ret = lp_shim_resolve("wake_up_new_task", false, &lp_fork_ip, &size);
	if (ret)
		return ret;
	lp_fork_ops.func = lp_fork_handler;
	lp_fork_ops.flags = FTRACE_OPS_FL_DYNAMIC;
	ret = ftrace_set_filter_ip(&lp_fork_ops, lp_fork_ip, 0, 0);
	if (!ret)
		ret = register_ftrace_function(&lp_fork_ops);
	if (ret) {
		ftrace_free_filter(&lp_fork_ops);
		lp_fork_ip = 0;
	}
	return ret;
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
static DEFINE_RAW_SPINLOCK(lp_table_lock);

void lp_shim_lock(void)
{
	mutex_lock(&lp_engine_mutex);
}

void lp_shim_unlock(void)
{
	mutex_unlock(&lp_engine_mutex);
}

unsigned long lp_shim_table_lock(void)
{
	unsigned long flags;

	raw_spin_lock_irqsave(&lp_table_lock, flags);
	return flags;
}

void lp_shim_table_unlock(unsigned long flags)
{
	raw_spin_unlock_irqrestore(&lp_table_lock, flags);
}

/*
 * Each CPU's idle task: not on the task list and not exported. idle_task() is resolved through
 * kallsyms (the same kprobe route as the patch targets) and called; NULL if unavailable (the
 * Rust side then falls back to spotting idle tasks from IPIs).
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
	info->idle = !!(t->flags & PF_IDLE) || t == &init_task;
	info->exiting = !!(t->flags & PF_EXITING) || t->exit_state;
	info->on_cpu = READ_ONCE(t->on_cpu);
	info->state = READ_ONCE(t->__state);
	info->start_time = t->start_time;
	memcpy(info->comm, t->comm, sizeof(info->comm));
	info->comm[sizeof(info->comm) - 1] = 0;
}

/*
 * Visits up to @max tasks with pid >= @cursor in ascending pid order, under rcu_read_lock()
 * (released between batches). Returns the next cursor, or 0 when the walk is complete.
 */
u64 lp_shim_tasks_batch(u64 cursor, u32 max, lp_task_cb cb, void *ctx)
{
	struct task_struct *g, *t, *pick[LP_BATCH_MAX];
	u32 n = 0, i, j;
	u64 next = 0;

	if (max > LP_BATCH_MAX)
		max = LP_BATCH_MAX;
	rcu_read_lock();
	for_each_process_thread(g, t) {
		if (t->pid < cursor)
			continue;
		/* insertion into the sorted pick[] array, keeping the @max smallest pids */
		if (n == max && t->pid > pick[n - 1]->pid)
			continue;
		for (i = 0; i < n && pick[i]->pid < t->pid; i++)
			;
		if (n < max)
			n++;
		for (j = n - 1; j > i; j--)
			pick[j] = pick[j - 1];
		pick[i] = t;
	}
	for (i = 0; i < n; i++)
		cb(ctx, pick[i]);
	if (n == max)
		next = (u64)pick[n - 1]->pid + 1;
	rcu_read_unlock();
	return next;
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

	/* From do_exit() the task still has kernel frames: not a switch point there. */
	lp_rs_exit_to_user(current, w->signal, !!(current->flags & PF_EXITING));
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

void lp_shim_synchronize(void)
{
	/*
	 * Handlers run with preemption disabled (ftrace_test_recursion_trylock()), so an RCU grace
	 * period covers them. Expedited: the same guarantee, forced with IPIs instead of waiting
	 * for every CPU to pass a quiescent state on its own (tens of ms under TCG and load).
	 */
	synchronize_rcu_expedited();
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
/* debugfs: /sys/kernel/debug/livepatch_rs/<patch>/{enabled,transition,force,stalls,stats}    */
/* ------------------------------------------------------------------------------------------ */

static struct dentry *lp_root;

static int lp_attr_show(struct seq_file *m, void *v)
{
	unsigned long key = (unsigned long)m->private;
	char *buf = kmalloc(LP_SHOW_MAX, GFP_KERNEL);
	int len;

	if (!buf)
		return -ENOMEM;
	len = lp_rs_attr_show(key >> 8, key & 0xff, buf, LP_SHOW_MAX);
	if (len > 0)
		seq_write(m, buf, len);
	kfree(buf);
	return len < 0 ? len : 0;
}

static int lp_attr_open(struct inode *inode, struct file *file)
{
	return single_open(file, lp_attr_show, inode->i_private);
}

static ssize_t lp_attr_write(struct file *file, const char __user *ubuf, size_t len, loff_t *off)
{
	unsigned long key = (unsigned long)((struct seq_file *)file->private_data)->private;
	char buf[32] = {};
	int ret;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	ret = lp_rs_attr_store(key >> 8, key & 0xff, buf, len);
	return ret < 0 ? ret : len;
}

static const struct file_operations lp_attr_fops = {
	.owner = THIS_MODULE,
	.open = lp_attr_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = lp_attr_write,
};

static const char *const lp_attr_names[] = {
	[LP_ATTR_ENABLED] = "enabled",
	[LP_ATTR_TRANSITION] = "transition",
	[LP_ATTR_FORCE] = "force",
	[LP_ATTR_STALLS] = "stalls",
	[LP_ATTR_STATS] = "stats",
};

int lp_shim_debugfs_add(u32 patch, const char *name)
{
	struct dentry *dir;
	u32 a;

	if (!lp_root)
		lp_root = debugfs_create_dir("livepatch_rs", NULL);
	if (IS_ERR(lp_root))
		return PTR_ERR(lp_root);
	dir = debugfs_create_dir(name, lp_root);
	if (IS_ERR(dir))
		return PTR_ERR(dir);
	for (a = 0; a < ARRAY_SIZE(lp_attr_names); a++) {
		umode_t mode = (a == LP_ATTR_ENABLED || a == LP_ATTR_FORCE) ? 0644 : 0444;

		debugfs_create_file(lp_attr_names[a], mode, dir,
				    (void *)(unsigned long)(patch << 8 | a), &lp_attr_fops);
	}
	return 0;
}

void lp_shim_debugfs_remove(void)
{
	debugfs_remove(lp_root);
	lp_root = NULL;
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

/* kernel-style logging from Rust without format strings crossing the boundary */
void lp_shim_log(int level, const char *msg, int len)
{
	if (level <= 3)
		pr_err("livepatch_rs: %.*s\n", len, msg);
	else
		pr_info("livepatch_rs: %.*s\n", len, msg);
}
