// SPDX-License-Identifier: GPL-2.0
/*
 * ftrace_target: module code for the function tracer to trace. Writing N
 * to /sys/module/ftrace_target/parameters/calls calls
 * ftrace_target_work() N times and prints what they returned.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static int calls;

static noinline int ftrace_target_work(int i)
{
	return i * 2 + 1;
}

static int ftrace_target_set(const char *val, const struct kernel_param *kp)
{
	int n, i, sum = 0;
	int ret = kstrtoint(val, 0, &n);

	if (ret)
		return ret;
	for (i = 0; i < n; i++)
		sum += ftrace_target_work(i);
	pr_info("ftrace-target: %d calls, sum %d\n", n, sum);
	calls += n;
	return 0;
}

static const struct kernel_param_ops ftrace_target_ops = {
	.set = ftrace_target_set,
	.get = param_get_int,
};
module_param_cb(calls, &ftrace_target_ops, &calls, 0644);

MODULE_DESCRIPTION("Module code for the function tracer to trace");
MODULE_LICENSE("GPL");
