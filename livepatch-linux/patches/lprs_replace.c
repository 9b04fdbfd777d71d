// SPDX-License-Identifier: GPL-2.0
/*
 * An atomic-replace patch (.replace = true): when its transition completes every other
 * enabled patch is replaced, and functions they patched that this one does not (e.g.
 * lp_late_value) run their original code again.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/seq_file.h>
#include <livepatch_rs.h>

static int lprs_replace_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", "replaced by lprs_replace");
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lprs_replace_cmdline_proc_show,
	}, { }
};

static struct klp_object objs[] = {
	{
		.funcs = funcs,
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	.replace = true,
};

static int lprs_replace_init(void)
{
	return klp_enable_patch(&patch);
}

static void lprs_replace_exit(void)
{
}

module_init(lprs_replace_init);
module_exit(lprs_replace_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
