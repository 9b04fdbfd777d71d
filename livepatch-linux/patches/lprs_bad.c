// SPDX-License-Identifier: GPL-2.0
/* A patch naming a function that does not exist: klp_enable_patch() fails, so does the load. */
#include <linux/module.h>
#include <livepatch_rs.h>

static int lprs_bad_new(void)
{
	return 0;
}

static struct klp_func funcs[] = {
	{
		.old_name = "lprs_no_such_function",
		.new_func = lprs_bad_new,
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
};

static int lprs_bad_init(void)
{
	return klp_enable_patch(&patch);
}

static void lprs_bad_exit(void)
{
}

module_init(lprs_bad_init);
module_exit(lprs_bad_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
