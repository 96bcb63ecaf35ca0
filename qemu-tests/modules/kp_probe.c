// SPDX-License-Identifier: GPL-2.0
/*
 * kp_probe: a guest that tries to play the resource manager. It issues
 * protect_vm_assets (HVC immediate 0x6094), which only the resource
 * manager may make, and enable_vm_protection (0xC6060060) naming address
 * spaces other than its own; each answer is printed for the system tests.
 * The same enable call naming itself (0) is the control: it is a
 * self-check, not a refusal.
 */
#include <linux/arm-smccc.h>
#include <linux/delay.h>
#include <linux/module.h>

#define KP_ENABLE_VM_PROTECTION 0xC6060060
#define KP_SELF 0
#define KP_BUSY 31

static unsigned long protect_vm_assets(unsigned long target)
{
	register unsigned long x0 asm("x0") = target;
	register unsigned long x1 asm("x1") = 0;
	register unsigned long x2 asm("x2") = 0;
	register unsigned long x3 asm("x3") = 0;

	asm volatile("hvc #0x6094"
		     : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
		     :
		     : "memory");
	return x0;
}

static unsigned long enable_vm_protection(unsigned long target)
{
	struct arm_smccc_res res;

	arm_smccc_hvc(KP_ENABLE_VM_PROTECTION, target, 0, 0, 0, 0, 0, 0, &res);
	return res.a0;
}

/*
 * The control: a self-check. The hypervisor takes the measurements a step
 * at a time and answers BUSY until the verdict is there.
 */
static unsigned long self_check(void)
{
	unsigned long x0;
	int tries = 0;

	while ((x0 = enable_vm_protection(KP_SELF)) == KP_BUSY && ++tries < 5000)
		msleep(1);
	return x0;
}

static int __init kp_probe_init(void)
{
	pr_info("kp-probe: protect_vm_assets(1): x0=%ld\n",
		(long)protect_vm_assets(1));
	pr_info("kp-probe: enable_vm_protection(1): x0=%ld\n",
		(long)enable_vm_protection(1));
	pr_info("kp-probe: enable_vm_protection(0xffff): x0=%ld\n",
		(long)enable_vm_protection(0xffff));
	pr_info("kp-probe: enable_vm_protection(self): x0=%ld\n",
		(long)self_check());
	return 0;
}

static void __exit kp_probe_exit(void)
{
}

module_init(kp_probe_init);
module_exit(kp_probe_exit);
MODULE_DESCRIPTION("pvguard system test: a guest playing resource manager");
MODULE_LICENSE("GPL");
