// SPDX-License-Identifier: GPL-2.0
/*
 * lp_late.ko: a patch target that is loaded *after* the patch naming it is enabled, and
 * unloaded and loaded again while it stays enabled (the kernel's klp_module_coming/going).
 *
 * lp_late_value() is static and not exported: livepatch_rs finds it by name in this module's
 * own symbol table (as klp_find_object_symbol does), at MODULE_STATE_COMING, before any of
 * this module's code has run. /proc/lp_late prints what it returns: 1 for the original, 2 for
 * livepatch_rs's replacement. The init function calls it too and logs the value, so the log
 * shows that even a module's init runs the patched code.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

/*
 * Set at init: were the original to return a constant, clang's interprocedural constant
 * propagation would let callers use that constant without looking at the call's result (the
 * call stays, the redirected return value would be ignored).
 */
static int lp_late_orig;

static noinline int lp_late_value(void)
{
	return READ_ONCE(lp_late_orig);
}

static int lp_late_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%d\n", lp_late_value());
	return 0;
}

static int __init lp_late_init(void)
{
	WRITE_ONCE(lp_late_orig, 1);
	pr_info("lp_late: init sees lp_late_value() = %d\n", lp_late_value());
	if (!proc_create_single("lp_late", 0444, NULL, lp_late_show))
		return -ENOMEM;
	return 0;
}

static void __exit lp_late_exit(void)
{
	remove_proc_entry("lp_late", NULL);
}

module_init(lp_late_init);
module_exit(lp_late_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("livepatch-linux e2e: a module loaded after its patch");
