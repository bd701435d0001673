/* cpuops_xen.S: the assembly half of the paravirtual CPU-ops layer.
 * As cpuops_native.S, except that the kernel's data selector has RPL 1,
 * trap return is the iret hypercall (which restores the event mask from
 * the saved EFLAGS.IF), and events enter through xen_event_entry. */
#define KDATA_SEL_PV 0x11
#define HYPERVISOR_iret 23

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

.macro SAVE_FRAME
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    pushal
    movw $KDATA_SEL_PV, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    cld
.endm

    .globl cpu_trap_entry
cpu_trap_entry:
    SAVE_FRAME
    pushl %esp
    call trap
    addl $4, %esp
    .globl cpu_trap_return
cpu_trap_return:
    popal
    popl %gs
    popl %fs
    popl %es
    popl %ds
    addl $8, %esp
    jmp hypercall_page + HYPERVISOR_iret * 32

/* The event callback (set_callbacks): a frame like an interrupt's. */
    .globl xen_event_entry
xen_event_entry:
    pushl $0
    pushl $32                   /* T_IRQ0, until xen_event_dispatch says which */
    SAVE_FRAME
    pushl %esp
    call xen_event_dispatch
    addl $4, %esp
    jmp cpu_trap_return

/* The failsafe callback: the hypervisor could not reload a segment. */
    .globl xen_failsafe_entry
xen_failsafe_entry:
    pushl $0
    pushl $13
    SAVE_FRAME
    pushl %esp
    call xen_failsafe
