/* trap.c: the IDT and the one C function every trap reaches.
 *
 * Exceptions from ring 3 are the process's problem: a page fault may be
 * resolved (demand paging), a divide error may go to the process's handler,
 * anything else kills it.  Exceptions in the kernel are bugs: panic.
 * The timer interrupt counts ticks and, if it interrupted ring 3, makes the
 * process yield: that is the preemption of the round-robin scheduler. */
#include "kernel.h"
#include "cpuops.h"

struct gatedesc idt[256] __attribute__((section(".cputables.idt")));
volatile u32 ticks;
volatile u32 probe_int_cs, probe_int_count;

extern void (*const vectors[48])(void);
extern void (*const vector_syscall)(void);
extern void (*const vector_probe)(void);

void trap_init(void)
{
    for (int v = 0; v < 48; v++)
        cpu_set_idt_entry(idt, v, vectors[v], GATE_INT);
    /* Interrupt gates (not trap gates) everywhere: the kernel runs with
     * interrupts off, so a syscall is never preempted half-way. */
    cpu_set_idt_entry(idt, T_SYSCALL, vector_syscall, GATE_INT_USER);
    cpu_set_idt_entry(idt, T_PROBE, vector_probe, GATE_INT);
    cpu_load_idt(idt, sizeof idt - 1);
}

static const char *const names[] = {
    "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range",
    "invalid opcode", "device not available", "double fault", "coprocessor overrun",
    "invalid TSS", "segment not present", "stack fault", "general protection",
    "page fault", "reserved", "x87 error", "alignment check", "machine check",
    "SIMD error",
};

const char *trap_name(u32 trapno)
{
    if (trapno < ARRAY_SIZE(names))
        return names[trapno];
    if (trapno == T_SYSCALL)
        return "system call";
    return trapno >= T_IRQ0 && trapno < T_IRQ0 + 16 ? "interrupt" : "unknown trap";
}

/* A divide error in a process that registered a handler with catch():
 * push the faulting EIP on its stack and enter the handler, as if the
 * faulting instruction had called it.  The handler decides where to
 * resume (the divzero workload skips the 2-byte DIV). */
static int deliver_divide_error(struct trapframe *tf)
{
    u32 sp = tf->esp - 4;
    if (!current->catch_handler || !vm_user_range_ok(sp, 4))
        return 0;
    *(u32 *)sp = tf->eip;
    tf->esp = sp;
    tf->eip = current->catch_handler;
    return 1;
}

/* On a CPU where INT n faults outside ring 0 (trapvisor's strict CPU, on which
 * every sensitive instruction traps at CPL > 0), a system call arrives as #GP(0)
 * with EIP at the INT 0x80: perform it and return past the instruction. */
static int syscall_by_gp(struct trapframe *tf)
{
    const u8 *ip = (const u8 *)tf->eip;
    if (tf->err != 0 || ip[0] != 0xcd || ip[1] != T_SYSCALL)
        return 0;
    tf->eip += 2;
    tf->trapno = T_SYSCALL;
    syscall(tf);
    return 1;
}

void trap(struct trapframe *tf)
{
    int from_user = (tf->cs & 3) == 3;

    if (tf->trapno == T_SYSCALL) {
        syscall(tf);
        return;
    }
    if (from_user && current && tf->trapno == T_GPFLT && syscall_by_gp(tf))
        return;
    if (tf->trapno >= T_IRQ0 && tf->trapno < T_IRQ0 + 16) {
        int irq = tf->trapno - T_IRQ0;
        if (irq == 7 || irq == 15)
            return;   /* spurious (or unused) IRQ 7/15: no EOI for spurious */
        pic_eoi(irq);
        if (irq == 0) {
            ticks++;
            if (from_user && current)
                proc_yield();
        }
        return;
    }
    if (tf->trapno == T_PROBE) {
        probe_int_cs = tf->cs;
        probe_int_count++;
        return;
    }
    if (from_user && current) {
        if (tf->trapno == T_PGFLT && vm_user_fault(cpu_read_cr2()))
            return;
        if (tf->trapno == T_DIVIDE && deliver_divide_error(tf))
            return;
        proc_kill_current(tf->trapno, tf->trapno == T_PGFLT ? cpu_read_cr2() : 0);
    }
    panic("%s (trap %u, error 0x%x) in kernel at eip 0x%08x, cr2 0x%08x",
          trap_name(tf->trapno), tf->trapno, tf->err, tf->eip, cpu_read_cr2());
}
