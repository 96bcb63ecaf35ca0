// SPDX-License-Identifier: GPL-2.0 OR MIT
//! Entry from QEMU, the EL2 exception vectors and the first switch to the
//! guest. Traps from the guest save x0..x30 in a frame on the EL2 stack,
//! call into Rust with a pointer to it, restore it (with whatever the
//! handler changed) and return to the guest.

core::arch::global_asm!(
    r#"
.macro save_guest_regs
    sub sp, sp, #256
    stp x0, x1, [sp, #0]
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
.endm

.macro restore_guest_regs_and_eret
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldr x30, [sp, #240]
    add sp, sp, #256
    eret
.endm

.section .text.entry, "ax"
.global _start
_start:
    msr daifset, #0xf
    adrp x1, __stack_top
    add x1, x1, :lo12:__stack_top
    mov sp, x1
    adrp x1, __bss_start
    add x1, x1, :lo12:__bss_start
    adrp x2, __bss_end
    add x2, x2, :lo12:__bss_end
0:  cmp x1, x2
    b.hs 1f
    stp xzr, xzr, [x1], #16
    b 0b
1:  adrp x1, hyp_vectors
    add x1, x1, :lo12:hyp_vectors
    msr vbar_el2, x1
    isb
    bl hyp_main
2:  wfe
    b 2b

/* A secondary CPU, started by PSCI CPU_ON at EL2 with x0 = its vCPU
 * slot (< MAX_CPUS, checked before CPU_ON): its own stack, the vectors,
 * then Rust. */
.global secondary_entry
secondary_entry:
    msr daifset, #0xf
    adrp x1, __stack_top
    add x1, x1, :lo12:__stack_top
    lsl x2, x0, #16
    sub x1, x1, x2
    mov sp, x1
    adrp x1, hyp_vectors
    add x1, x1, :lo12:hyp_vectors
    msr vbar_el2, x1
    isb
    bl secondary_main
4:  wfe
    b 4b

/* enter_guest(entry, x0, stack_top): first entry of a vCPU into the
 * guest at EL1h with all interrupts masked, x0 as given (the device tree,
 * or CPU_ON's context ID), x1..x3 = 0, on a fresh EL2 stack. */
.global enter_guest
enter_guest:
    msr elr_el2, x0
    mov x3, #0x3c5
    msr spsr_el2, x3
    mov sp, x2
    mov x0, x1
    mov x1, xzr
    mov x2, xzr
    mov x3, xzr
    eret

lower_sync:
    save_guest_regs
    mov x0, sp
    bl handle_lower_sync
    restore_guest_regs_and_eret

lower_async:
    save_guest_regs
    bl handle_lower_async
    restore_guest_regs_and_eret

hyp_self_fault:
    bl handle_hyp_fault
3:  wfe
    b 3b

.section .text.vectors, "ax"
.balign 2048
.global hyp_vectors
hyp_vectors:
    /* Current EL with SP_EL0, then with SP_ELx: the hypervisor itself. */
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    /* Lower EL, AArch64: the guest. */
    .balign 128
    b lower_sync
    .balign 128
    b lower_async
    .balign 128
    b lower_async
    .balign 128
    b lower_async
    /* Lower EL, AArch32: not allowed (HCR_EL2.RW = 1). */
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
    .balign 128
    b hyp_self_fault
"#
);

extern "C" {
    /// Switches this CPU to the guest for the first time; never returns.
    pub fn enter_guest(entry: u64, x0: u64, stack_top: u64) -> !;
    /// Where secondary CPUs start (PSCI CPU_ON).
    pub fn secondary_entry();
    /// The top of CPU 0's stack.
    static __stack_top: u8;
}

/// The top of the stack of the CPU running vCPU `slot`.
pub fn stack_top(slot: usize) -> u64 {
    let top = core::ptr::addr_of!(__stack_top) as u64;
    top - (slot as u64) * 0x10000
}
