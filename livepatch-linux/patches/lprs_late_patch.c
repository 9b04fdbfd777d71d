// SPDX-License-Identifier: GPL-2.0
/*
 * A patch for a module's function: lp_late.ko's lp_late_value() is static and not exported;
 * the object is named, so livepatch_rs finds it in lp_late's own symbol table, now if the
 * module is loaded, or when it loads. The callbacks log as the kernel's selftest modules do.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <livepatch_rs.h>

static int lprs_late_value(void)
{
	return 3;
}

static int pre_patch(struct klp_object *obj)
{
	pr_info("pre_patch_callback: %s\n", obj->name);
	return 0;
}

static void post_patch(struct klp_object *obj)
{
	pr_info("post_patch_callback: %s\n", obj->name);
}

static void pre_unpatch(struct klp_object *obj)
{
	pr_info("pre_unpatch_callback: %s\n", obj->name);
}

static void post_unpatch(struct klp_object *obj)
{
	pr_info("post_unpatch_callback: %s\n", obj->name);
}

static struct klp_func funcs[] = {
	{
		.old_name = "lp_late_value",
		.new_func = lprs_late_value,
		.old_sympos = 1,
	}, { }
};

static struct klp_object objs[] = {
	{
		.name = "lp_late",
		.funcs = funcs,
		.callbacks = {
			.pre_patch = pre_patch,
			.post_patch = post_patch,
			.pre_unpatch = pre_unpatch,
			.post_unpatch = post_unpatch,
		},
	}, { }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int lprs_late_patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void lprs_late_patch_exit(void)
{
}

module_init(lprs_late_patch_init);
module_exit(lprs_late_patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
