// SPDX-License-Identifier: GPL-2.0
/*
 * lp_target.ko - the patch target of the livepatch-linux end-to-end test.
 *
 * Three functions are meant to be patched; each is reached by a different kind of task:
 *
 *  lp_target_read()  is called when /proc/lp_target is read: user processes run it in a loop;
 *  lp_target_tick()  is called every few ms by the kthread "lp_ticker";
 *  lp_target_sleep() is where the kthread "lp_sleeper" sleeps while the test holds it
 *                    (echo hold > /proc/lp_target_ctl) until released (echo release > ...).
 *
 * Each returns 1; the patch's replacements return 2. /proc/lp_target prints one line with what the
 * last call of each returned and whether the sleeper is inside lp_target_sleep() right now, so the
 * test can see which variant each kind of task runs.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <linux/sched.h>
#include <linux/kprobes.h>
#include <linux/task_work.h>
#include <linux/rcupdate.h>

/* The patch targets (exported so that a patch module can resolve them with symbol_get()). */
int lp_target_read(void);
int lp_target_tick(void);
int lp_target_sleep(void);
int lp_target_block(void);
int lp_target_f(void);
int lp_target_g(void);
int lp_target_twrun(void);
int lp_target_twstep(void);
void lp_target_run_task_work(void);

/*
 * What the originals return. Read with READ_ONCE() so that the compiler cannot propagate a
 * constant return value into the callers (clang does that across noinline functions, and the
 * callers would then never look at what a patched function returns).
 */
static int lp_original = 1;

static DECLARE_WAIT_QUEUE_HEAD(lp_wq);
static bool lp_hold;              /* the test wants the sleeper held in lp_target_sleep() */
static int lp_sleeping;           /* the sleeper is inside lp_target_sleep() right now */
static unsigned long lp_ticks;    /* calls of lp_target_tick() */
static unsigned long lp_sleeps;   /* lp_target_sleep() calls that returned */
static int lp_last_tick;          /* what the last lp_target_tick() returned */
static int lp_last_sleep;         /* what the last lp_target_sleep() returned */
static struct task_struct *lp_ticker, *lp_sleeper;

/* Patched functions: noinline and global so that they keep an fentry site and a symbol. */
noinline int lp_target_read(void)
{
	return READ_ONCE(lp_original);
}
EXPORT_SYMBOL_GPL(lp_target_read);

noinline int lp_target_tick(void)
{
	return READ_ONCE(lp_original);
}
EXPORT_SYMBOL_GPL(lp_target_tick);

noinline int lp_target_sleep(void)
{
	WRITE_ONCE(lp_sleeping, 1);
	wait_event_interruptible(lp_wq, !READ_ONCE(lp_hold) || kthread_should_stop());
	WRITE_ONCE(lp_sleeping, 0);
	return READ_ONCE(lp_original);
}
EXPORT_SYMBOL_GPL(lp_target_sleep);

/*
 * The consistency stress (see scripts/guest-init.sh, scenario "stress").
 *
 * lp_target_f() calls lp_target_g() through g's own entry, so while a patch of both is in
 * transition, g's hook decides again for the same task inside f. The originals return 1 (g)
 * and 10 + g (f); the patch's variants 2 and 20 + g. One call of f therefore returns 11 (all
 * old), 22 (all new), or 12 / 21: a task that ran one universe's f with the other's g -- the
 * one thing the consistency model forbids. Every call is classified and counted.
 *
 * Two callers:
 *  - "lp_stress/N" kthreads, two per CPU, spin calling f (cond_resched() every 64 calls): they
 *    are always running, so only the per-CPU pass (or a kick) can switch them, and the IPI
 *    often lands inside f, g or the ftrace handler itself;
 *  - user tasks reading /proc/lp_target_tw: lp_target_twrun() runs pending task work *inside*
 *    itself (as io_uring's io_run_task_work() does in the middle of io_uring_enter(), KVM_RUN
 *    in xfer_to_guest_mode_work(), io-wq workers between requests), then calls
 *    lp_target_twstep() through its hook: 11/22 consistent, 12/21 mixed.
 */
noinline int lp_target_g(void)
{
	return READ_ONCE(lp_original);
}
EXPORT_SYMBOL_GPL(lp_target_g);

noinline int lp_target_f(void)
{
	return READ_ONCE(lp_original) * 10 + lp_target_g();
}
EXPORT_SYMBOL_GPL(lp_target_f);

typedef void (*lp_task_work_run_t)(void);
static lp_task_work_run_t lp_task_work_run;

/*
 * Runs the current task's pending task work, as io_uring does inside a syscall. task_work_run()
 * is not exported; it is resolved once at load (kprobe route to kallsyms_lookup_name()).
 */
void lp_target_run_task_work(void)
{
	if (lp_task_work_run && current->task_works)
		lp_task_work_run();
}
EXPORT_SYMBOL_GPL(lp_target_run_task_work);

noinline int lp_target_twstep(void)
{
	return READ_ONCE(lp_original);
}
EXPORT_SYMBOL_GPL(lp_target_twstep);

noinline int lp_target_twrun(void)
{
	udelay(20);
	lp_target_run_task_work();
	return READ_ONCE(lp_original) * 10 + lp_target_twstep();
}
EXPORT_SYMBOL_GPL(lp_target_twrun);

/* Counts of f() (index 0) and twrun() (index 1) results: all old, all new, mixed. */
static atomic_long_t lp_seen[2][3];

static void lp_classify(int which, int r)
{
	int k = r == 11 ? 0 : r == 22 ? 1 : 2;

	atomic_long_inc(&lp_seen[which][k]);
	if (k == 2)
		pr_err("lp_target: MIXED universes: %s returned %d in task %d (%s)\n",
		       which ? "twrun" : "f", r, current->pid, current->comm);
}

#define LP_STRESS_MAX 16
static struct task_struct *lp_stressers[LP_STRESS_MAX];
static DEFINE_MUTEX(lp_stress_lock);

static int lp_stress_fn(void *unused)
{
	unsigned long i = 0;

	while (!kthread_should_stop()) {
		lp_classify(0, lp_target_f());
		/*
		 * A well-behaved CPU-bound loop: a scheduling point, and an RCU-tasks quiescent
		 * state (on a preemptible kernel cond_resched() is empty and this kthread would
		 * otherwise never let an RCU-tasks grace period end -- ftrace's unregistration of
		 * a dynamic trampoline waits for one).
		 */
		if ((++i & 63) == 0)
			cond_resched_tasks_rcu_qs();
	}
	return 0;
}

/* Starts two spinning kthreads per online CPU (@on), or stops them. */
static int lp_stress(bool on)
{
	int cpu, n = 0, i, ret = 0;

	mutex_lock(&lp_stress_lock);
	for (i = 0; i < LP_STRESS_MAX; i++) {
		if (lp_stressers[i]) {
			kthread_stop(lp_stressers[i]);
			lp_stressers[i] = NULL;
		}
	}
	if (on) {
		for_each_online_cpu(cpu) {
			for (i = 0; i < 2 && n < LP_STRESS_MAX; i++) {
				struct task_struct *t = kthread_create(lp_stress_fn, NULL, "lp_stress/%d", cpu);

				if (IS_ERR(t)) {
					ret = PTR_ERR(t);
					break;
				}
				kthread_bind(t, cpu);
				wake_up_process(t);
				lp_stressers[n++] = t;
			}
		}
	}
	mutex_unlock(&lp_stress_lock);
	return ret;
}

static int lp_tw_show(struct seq_file *m, void *v)
{
	int r = lp_target_twrun();

	lp_classify(1, r);
	seq_printf(m, "%d\n", r);
	return 0;
}

static int lp_stress_show(struct seq_file *m, void *v)
{
	seq_printf(m, "f_old=%ld f_new=%ld f_mixed=%ld tw_old=%ld tw_new=%ld tw_mixed=%ld\n",
		   atomic_long_read(&lp_seen[0][0]), atomic_long_read(&lp_seen[0][1]),
		   atomic_long_read(&lp_seen[0][2]), atomic_long_read(&lp_seen[1][0]),
		   atomic_long_read(&lp_seen[1][1]), atomic_long_read(&lp_seen[1][2]));
	return 0;
}

/*
 * A user task sleeping inside a patched function: reading /proc/lp_target_block blocks in
 * lp_target_block() while the test holds it (echo blockhold / blockrelease > /proc/lp_target_ctl).
 * The sleep is interruptible; a fake signal (task work with TWA_SIGNAL) ends it with
 * -ERESTARTSYS, the read returns to the syscall exit path (where the task switches) and is
 * restarted -- in the new universe, whose variant returns 2 at once.
 */
static bool lp_block_hold;
static int lp_blocking;

noinline int lp_target_block(void)
{
	int ret;

	WRITE_ONCE(lp_blocking, 1);
	ret = wait_event_interruptible(lp_wq, !READ_ONCE(lp_block_hold));
	WRITE_ONCE(lp_blocking, 0);
	return ret ? ret : READ_ONCE(lp_original);
}
EXPORT_SYMBOL_GPL(lp_target_block);

static int lp_block_show(struct seq_file *m, void *v)
{
	int r = lp_target_block();

	if (r < 0)
		return r;	/* -ERESTARTSYS: restarted after the (fake) signal */
	seq_printf(m, "%d\n", r);
	return 0;
}

static int lp_proc_show(struct seq_file *m, void *v)
{
	int r = lp_target_read();

	seq_printf(m, "read=%d tick=%d sleep=%d sleeping=%d ticks=%lu sleeps=%lu blocking=%d\n", r,
		   READ_ONCE(lp_last_tick), READ_ONCE(lp_last_sleep), READ_ONCE(lp_sleeping),
		   READ_ONCE(lp_ticks), READ_ONCE(lp_sleeps), READ_ONCE(lp_blocking));
	return 0;
}

static int lp_ticker_fn(void *unused)
{
	while (!kthread_should_stop()) {
		WRITE_ONCE(lp_last_tick, lp_target_tick());
		WRITE_ONCE(lp_ticks, lp_ticks + 1);
		schedule_timeout_interruptible(msecs_to_jiffies(4));
	}
	return 0;
}

static int lp_sleeper_fn(void *unused)
{
	while (!kthread_should_stop()) {
		if (READ_ONCE(lp_hold)) {
			WRITE_ONCE(lp_last_sleep, lp_target_sleep());
			WRITE_ONCE(lp_sleeps, lp_sleeps + 1);
		}
		else
			wait_event_interruptible_timeout(lp_wq, READ_ONCE(lp_hold) || kthread_should_stop(),
							 msecs_to_jiffies(10));
	}
	return 0;
}

static ssize_t lp_ctl_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	char buf[16] = {};

	if (copy_from_user(buf, ubuf, min(len, sizeof(buf) - 1)))
		return -EFAULT;
	if (!strncmp(buf, "stress", 6) || !strncmp(buf, "nostress", 8)) {
		int ret = lp_stress(buf[0] == 's');

		return ret ? ret : len;
	}
	if (!strncmp(buf, "blockhold", 9))
		WRITE_ONCE(lp_block_hold, true);
	else if (!strncmp(buf, "blockrelease", 12))
		WRITE_ONCE(lp_block_hold, false);
	else if (!strncmp(buf, "hold", 4))
		WRITE_ONCE(lp_hold, true);
	else if (!strncmp(buf, "release", 7))
		WRITE_ONCE(lp_hold, false);
	else
		return -EINVAL;
	wake_up_all(&lp_wq);
	return len;
}

static const struct proc_ops lp_ctl_ops = {
	.proc_write = lp_ctl_write,
};

typedef unsigned long (*lp_kallsyms_lookup_name_t)(const char *name);

/* kallsyms_lookup_name() is not exported: a kprobe on it resolves its address. */
static unsigned long lp_lookup(const char *name)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	lp_kallsyms_lookup_name_t lookup;

	if (register_kprobe(&kp) < 0)
		return 0;
	lookup = (lp_kallsyms_lookup_name_t)kp.addr;
	unregister_kprobe(&kp);
	return lookup ? lookup(name) : 0;
}

static int __init lp_target_init(void)
{
	lp_task_work_run = (lp_task_work_run_t)lp_lookup("task_work_run");
	if (!lp_task_work_run)
		pr_warn("lp_target: task_work_run not found: /proc/lp_target_tw runs no task work\n");
	if (!proc_create_single("lp_target", 0444, NULL, lp_proc_show))
		return -ENOMEM;
	if (!proc_create_single("lp_target_tw", 0444, NULL, lp_tw_show) ||
	    !proc_create_single("lp_target_block", 0444, NULL, lp_block_show) ||
	    !proc_create_single("lp_target_stress", 0444, NULL, lp_stress_show))
		goto err_proc;
	if (!proc_create("lp_target_ctl", 0200, NULL, &lp_ctl_ops))
		goto err_proc;
	lp_ticker = kthread_run(lp_ticker_fn, NULL, "lp_ticker");
	if (IS_ERR(lp_ticker))
		goto err_ctl;
	lp_sleeper = kthread_run(lp_sleeper_fn, NULL, "lp_sleeper");
	if (IS_ERR(lp_sleeper))
		goto err_ticker;
	return 0;
err_ticker:
	kthread_stop(lp_ticker);
err_ctl:
	remove_proc_entry("lp_target_ctl", NULL);
err_proc:
	remove_proc_entry("lp_target_stress", NULL);
	remove_proc_entry("lp_target_block", NULL);
	remove_proc_entry("lp_target_tw", NULL);
	remove_proc_entry("lp_target", NULL);
	return -ENOMEM;
}

static void __exit lp_target_exit(void)
{
	WRITE_ONCE(lp_hold, false);
	WRITE_ONCE(lp_block_hold, false);
	wake_up_all(&lp_wq);
	lp_stress(false);
	kthread_stop(lp_sleeper);
	kthread_stop(lp_ticker);
	remove_proc_entry("lp_target_ctl", NULL);
	remove_proc_entry("lp_target_stress", NULL);
	remove_proc_entry("lp_target_block", NULL);
	remove_proc_entry("lp_target_tw", NULL);
	remove_proc_entry("lp_target", NULL);
}

module_init(lp_target_init);
module_exit(lp_target_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("livepatch-linux e2e: patch target and load");
