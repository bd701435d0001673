/* cpuops_native.S: the assembly half of the native CPU-ops layer: kernel
 * stack switches, and trap entry and exit. */

/* void cpu_switch_context(struct context **save, struct context *next)
 *
 * Saves the callee-saved registers on the current kernel stack, stores
 * that stack pointer in *save, then continues on next's stack.  The
 * return address on each stack is the context's EIP. */
    .text
    .globl cpu_switch_context
cpu_switch_context:
    movl 4(%esp), %eax
    movl 8(%esp), %edx
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, (%eax)
    movl %edx, %esp
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

/* cpu_trap_entry: common trap entry.  The vector stub (trapasm.S) has
 * pushed the error code and vector; save the rest of the trap frame,
 * switch to the kernel's data segments, call trap(tf), and leave through
 * cpu_trap_return. */
    .globl cpu_trap_entry
cpu_trap_entry:
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    pushal
    movw $0x10, %ax             /* KDATA_SEL */
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    cld
    pushl %esp                  /* trap(struct trapframe *tf) */
    call trap
    addl $4, %esp
    /* fall through */

/* cpu_trap_return: ESP points at a struct trapframe; restore it and IRET
 * (back to ring 3 or to the interrupted kernel code). */
    .globl cpu_trap_return
cpu_trap_return:
    popal
    popl %gs
    popl %fs
    popl %es
    popl %ds
    addl $8, %esp             /* trapno and error code */
    iret
