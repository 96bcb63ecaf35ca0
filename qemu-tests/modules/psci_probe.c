// SPDX-License-Identifier: GPL-2.0
/*
 * psci_probe: asks the hypervisor's PSCI what a guest may and may not do,
 * and prints one line per check ("ok" or "FAIL") for the system tests.
 *
 * - functions outside the allowlist answer NOT_SUPPORTED, PSCI_FEATURES
 *   agrees;
 * - a suspend with an entry point that is not guest RAM, or a reserved
 *   power_state bit, is refused and this CPU goes on;
 * - a standby CPU_SUSPEND returns SUCCESS in place;
 * - with a second CPU: a power-down CPU_SUSPEND on it resumes at our entry
 *   (below) at EL1 with the MMU off and the context ID in x0, which then
 *   turns the CPU off with CPU_OFF. Linux still counts that CPU as
 *   online (it never returned from the thread that suspended it), so the
 *   module then ends the machine itself with SYSTEM_OFF rather than let
 *   Linux wait for the CPU on its way down. What must go on once that
 *   CPU is gone runs in a thread bound to another CPU (see
 *   round_trip_thread()).
 *
 * Linux's own suspend path is not used: the test kernel has neither
 * CONFIG_SUSPEND nor CONFIG_CPU_IDLE, so this module makes the calls.
 */
#include <linux/arm-smccc.h>
#include <linux/completion.h>
#include <linux/hrtimer.h>
#include <linux/io.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/psci.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/vmalloc.h>
#include <uapi/linux/psci.h>
#include <asm/cputype.h>

#define PROBE_MAGIC 0xdeadbeefUL

/*
 * Where the suspended CPU resumes: EL1, MMU off, x0 = the context ID,
 * which is the physical address of a mailbox. Writes the magic, CurrentEL
 * and SCTLR_EL1 there, then turns the CPU off.
 */
asm(".pushsection .text, \"ax\"\n"
    ".balign 64\n"
    "psci_probe_resume:\n"
    "	movz	x1, #0xbeef\n"
    "	movk	x1, #0xdead, lsl #16\n"
    "	mrs	x2, CurrentEL\n"
    "	mrs	x3, sctlr_el1\n"
    "	stp	x2, x3, [x0, #8]\n"
    "	dsb	sy\n"
    "	str	x1, [x0]\n"
    "	dsb	sy\n"
    "	movz	x0, #0x0002\n"
    "	movk	x0, #0x8400, lsl #16\n"
    "	hvc	#0\n"
    "1:	wfe\n"
    "	b	1b\n"
    ".popsection\n");

extern char psci_probe_resume[];

struct mailbox {
	u64 magic;
	u64 current_el;
	u64 sctlr;
	u64 mpidr;
};

static int failures;

/*
 * By HVC, the conduit of PSCI both under hyp-stub (its device tree says
 * so) and on plain QEMU without EL2 (the control), whatever SMCCC version
 * Linux settled on.
 */
static long call(u32 fid, u64 a1, u64 a2, u64 a3)
{
	struct arm_smccc_res res;

	arm_smccc_hvc(fid, a1, a2, a3, 0, 0, 0, 0, &res);
	return (long)res.a0;
}

static void expect(const char *what, long got, long want)
{
	bool ok = got == want;

	pr_info("psci-probe: %s: %ld (want %ld) %s\n", what, got, want,
		ok ? "ok" : "FAIL");
	if (!ok)
		failures++;
}

/* The physical address of module text (vmalloc space). */
static phys_addr_t text_pa(void *p)
{
	return PFN_PHYS(vmalloc_to_pfn(p)) + offset_in_page(p);
}

static void suspend_on_this_cpu(void *mailbox)
{
	struct mailbox *box = mailbox;

	WRITE_ONCE(box->mpidr, read_cpuid_mpidr() & MPIDR_HWID_BITMASK);
	call(PSCI_0_2_FN64_CPU_SUSPEND, PSCI_0_2_POWER_STATE_TYPE_MASK,
	     text_pa(psci_probe_resume), virt_to_phys(mailbox));
	/* Resumes at psci_probe_resume instead; reaching here is a failure. */
	pr_info("psci-probe: power-down suspend returned in place FAIL\n");
}

/*
 * The suspending CPU runs a thread of ours with interrupts masked, as
 * cpuidle does; not an IPI handler, whose interrupt, still active, would
 * keep any other from waking the CPU.
 */
static int suspend_thread(void *mailbox)
{
	local_irq_disable();
	suspend_on_this_cpu(mailbox);
	local_irq_enable();
	return 0;
}

static void wake(void *unused)
{
}

/*
 * Sleeps on this CPU's own timer. A timer-wheel sleep (msleep) of a CPU
 * that goes idle may be left to a busy CPU to expire (timer migration, on
 * tickless kernels), and to Linux the suspended CPU is busy for good.
 */
static void sleep_here(unsigned int ms)
{
	ktime_t t = ms_to_ktime(ms);

	set_current_state(TASK_UNINTERRUPTIBLE);
	schedule_hrtimeout(&t, HRTIMER_MODE_REL_PINNED);
}

static void power_down_round_trip(unsigned int cpu)
{
	struct mailbox *box = kzalloc(sizeof(*box), GFP_KERNEL);
	struct task_struct *t;
	u64 mpidr;
	int i;

	if (!box)
		return;
	t = kthread_create(suspend_thread, box, "psci-probe/%u", cpu);
	if (IS_ERR(t)) {
		expect("suspend thread", PTR_ERR(t), 0);
		return;
	}
	kthread_bind(t, cpu);
	wake_up_process(t);
	/*
	 * The CPU waits for an interrupt: send it one IPI (one only: that
	 * CPU never handles it, so its call slot stays busy). Not before the
	 * thread has masked interrupts and is about to suspend (it writes its
	 * MPIDR then, and no CPU but the boot CPU has MPIDR 0): an IPI it
	 * took before would leave nothing to wake it, however long a loaded
	 * host took to schedule the thread. Under QEMU no cache holds the
	 * mailbox the MMU-off writes went to.
	 */
	for (i = 0; i < 5000 && !READ_ONCE(box->mpidr); i++)
		sleep_here(1);
	sleep_here(5);
	smp_call_function_single(cpu, wake, NULL, 0);
	for (i = 0; i < 200 && READ_ONCE(box->magic) != PROBE_MAGIC; i++)
		sleep_here(10);
	mpidr = READ_ONCE(box->mpidr);
	expect("power-down suspend resumed at the guest's entry",
	       READ_ONCE(box->magic) == PROBE_MAGIC, 1);
	expect("resumed at EL1", READ_ONCE(box->current_el) >> 2, 1);
	expect("resumed with the MMU off", READ_ONCE(box->sctlr) & 1, 0);
	for (i = 0; i < 200; i++) {
		if (call(PSCI_0_2_FN64_AFFINITY_INFO, mpidr, 0, 0) == 1)
			break;
		sleep_here(10);
	}
	expect("the resumed CPU turned itself off (AFFINITY_INFO)",
	       call(PSCI_0_2_FN64_AFFINITY_INFO, mpidr, 0, 0), 1);
	pr_info("psci-probe: done, %d failures; powering off\n", failures);
	/* The CPU is gone: end the machine here (see the top of the file). */
	call(PSCI_0_2_FN_SYSTEM_OFF, 0, 0, 0);
}

static unsigned int round_trip_target;
static DECLARE_COMPLETION(round_trip_returned);

/*
 * The suspended CPU never comes back to Linux, and what is queued on it
 * stays there: runnable tasks, timers. So the task that waits for it
 * must not be able to run there, as insmod's can (it may be running on
 * that very CPU): this thread is bound to the first CPU and suspends the
 * last.
 */
static int round_trip_thread(void *unused)
{
	power_down_round_trip(round_trip_target);
	complete(&round_trip_returned);
	return 0;
}

/*
 * Returns only if the round trip stopped short of SYSTEM_OFF (after a
 * failure it reported); insmod's task sleeps meanwhile, wherever it is.
 */
static void round_trip_from_another_cpu(void)
{
	struct task_struct *t;

	round_trip_target = cpumask_last(cpu_online_mask);
	t = kthread_run_on_cpu(round_trip_thread, NULL,
			       cpumask_first(cpu_online_mask),
			       "psci-probe-wait/%u");
	if (IS_ERR(t)) {
		expect("round-trip thread", PTR_ERR(t), 0);
		return;
	}
	wait_for_completion(&round_trip_returned);
}

static int __init psci_probe_init(void)
{
	phys_addr_t entry = text_pa(psci_probe_resume);
	unsigned long flags;

	expect("PSCI_FEATURES(CPU_SUSPEND)",
	       call(PSCI_1_0_FN_PSCI_FEATURES, PSCI_0_2_FN64_CPU_SUSPEND, 0, 0),
	       0);
	expect("PSCI_FEATURES(unknown)",
	       call(PSCI_1_0_FN_PSCI_FEATURES, 0x8400001f, 0, 0),
	       PSCI_RET_NOT_SUPPORTED);
	expect("unknown PSCI function", call(0x8400001f, 1, entry, 0),
	       PSCI_RET_NOT_SUPPORTED);
	expect("MEM_PROTECT", call(PSCI_1_1_FN_MEM_PROTECT, 1, 0, 0),
	       PSCI_RET_NOT_SUPPORTED);
	expect("CPU_SUSPEND with a reserved bit",
	       call(PSCI_0_2_FN64_CPU_SUSPEND, BIT(30), entry, 0),
	       PSCI_RET_INVALID_PARAMS);
	expect("CPU_SUSPEND power-down to a bogus entry",
	       call(PSCI_0_2_FN64_CPU_SUSPEND, PSCI_0_2_POWER_STATE_TYPE_MASK,
		    0x1000, 0),
	       PSCI_RET_INVALID_ADDRESS);
	expect("CPU_SUSPEND power-down to a misaligned entry",
	       call(PSCI_0_2_FN64_CPU_SUSPEND, PSCI_0_2_POWER_STATE_TYPE_MASK,
		    entry + 2, 0),
	       PSCI_RET_INVALID_ADDRESS);
	expect("CPU_DEFAULT_SUSPEND to a bogus entry",
	       call(PSCI_1_0_FN64_CPU_DEFAULT_SUSPEND, 0x1000, 0, 0),
	       PSCI_RET_INVALID_ADDRESS);
	expect("SYSTEM_SUSPEND to a bogus entry",
	       call(PSCI_1_0_FN64_SYSTEM_SUSPEND, 0x1000, 0, 0),
	       PSCI_RET_INVALID_ADDRESS);
	/* A standby suspend returns once an interrupt is pending. */
	local_irq_save(flags);
	expect("CPU_SUSPEND standby", call(PSCI_0_2_FN64_CPU_SUSPEND, 0, 0, 0),
	       PSCI_RET_SUCCESS);
	local_irq_restore(flags);
	if (num_online_cpus() > 1)
		round_trip_from_another_cpu();
	pr_info("psci-probe: done, %d failures\n", failures);
	return 0;
}

static void __exit psci_probe_exit(void)
{
}

module_init(psci_probe_init);
module_exit(psci_probe_exit);
MODULE_DESCRIPTION("pvguard system test: the hypervisor's PSCI allowlist");
MODULE_LICENSE("GPL");
