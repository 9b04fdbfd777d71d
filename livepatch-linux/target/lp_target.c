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

/* The patch targets (exported so that a patch module can resolve them with symbol_get()). */
int lp_target_read(void);
int lp_target_tick(void);
int lp_target_sleep(void);

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

static int lp_proc_show(struct seq_file *m, void *v)
{
	int r = lp_target_read();

	seq_printf(m, "read=%d tick=%d sleep=%d sleeping=%d ticks=%lu\n", r,
		   READ_ONCE(lp_last_tick), READ_ONCE(lp_last_sleep), READ_ONCE(lp_sleeping),
		   READ_ONCE(lp_ticks));
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
		if (READ_ONCE(lp_hold))
			WRITE_ONCE(lp_last_sleep, lp_target_sleep());
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
	if (!strncmp(buf, "hold", 4))
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

static int __init lp_target_init(void)
{
	if (!proc_create_single("lp_target", 0444, NULL, lp_proc_show))
		return -ENOMEM;
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
	remove_proc_entry("lp_target", NULL);
	return -ENOMEM;
}

static void __exit lp_target_exit(void)
{
	WRITE_ONCE(lp_hold, false);
	kthread_stop(lp_sleeper);
	kthread_stop(lp_ticker);
	remove_proc_entry("lp_target_ctl", NULL);
	remove_proc_entry("lp_target", NULL);
}

module_init(lp_target_init);
module_exit(lp_target_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("livepatch-linux e2e: patch target and load");
