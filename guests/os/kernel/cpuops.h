/* cpuops.h: the one narrow layer through which tvos does everything
 * privileged or sensitive.
 *
 * No other kernel source file contains CLI, STI, PUSHF/POPF, MOV to or
 * from a control register, LGDT/LIDT/LTR/LLDT, INVLPG, IN/OUT, HLT or IRET,
 * writes a page-table entry directly, or switches kernel stacks.  The
 * native build implements this interface with the plain instructions
 * (cpuops_native.c and cpuops_native.S).  A paravirtualized build replaces
 * those two files -- and nothing else -- with hypercalls, the way Linux's
 * paravirt_ops lets one kernel binary run on bare metal or on Xen.
 *
 * Trap entry and exit (saving the frame, loading the kernel's segments,
 * IRET) belong to the layer too: a paravirtual kernel enters and leaves
 * through its hypervisor's callbacks instead.
 *
 * The one deliberate exception is probe.c: the sensitivity probe exists to
 * execute the sensitive-but-unprivileged instructions themselves.
 */
#ifndef TVOS_CPUOPS_H
#define TVOS_CPUOPS_H
#include "types.h"
#include "x86.h"

/* Interrupt flag. */
void cpu_irq_disable(void);              /* CLI */
void cpu_irq_enable(void);               /* STI */
u32  cpu_irq_save(void);                 /* PUSHF; CLI -> the old flags */
void cpu_irq_restore(u32 flags);         /* POPF of a cpu_irq_save() value */
u32  cpu_read_flags(void);               /* PUSHF */
void cpu_wait_for_interrupt(void);       /* STI; HLT; CLI: idle until an IRQ */
void cpu_halt_forever(void) __attribute__((noreturn));

/* Control registers. */
u32  cpu_read_cr0(void);
void cpu_write_cr0(u32 v);
u32  cpu_read_cr2(void);                 /* page-fault linear address */
u32  cpu_read_cr3(void);
void cpu_write_cr3(u32 pgdir_phys);      /* switch address space, flush TLB */
u32  cpu_read_cr4(void);
void cpu_write_cr4(u32 v);

/* Descriptor tables and task register. */
void cpu_load_gdt(const struct segdesc *gdt, u16 limit);   /* also reloads segments */
void cpu_load_idt(const struct gatedesc *idt, u16 limit);
void cpu_load_tr(u16 sel);
void cpu_load_ldt(u16 sel);
void cpu_set_idt_entry(struct gatedesc *idt, int vector, void (*entry)(void), u8 type_attr);

/* Paging. */
void cpu_set_pte(pte_t *slot, pte_t value);   /* every PTE and PDE write */
void cpu_invlpg(u32 va);

/* Port I/O. */
u8   cpu_inb(u16 port);
void cpu_outb(u16 port, u8 v);

/* Stacks and context: the kernel stack the CPU uses for traps from ring 3
 * (TSS.ESP0), switching between kernel threads, and leaving the kernel
 * through a trap frame (IRET). */
struct context { u32 edi, esi, ebx, ebp, eip; };
void cpu_set_kernel_stack(u32 esp0);
void cpu_switch_context(struct context **save, struct context *next);
void cpu_trap_entry(void);               /* asm: vector stubs jump here; calls trap() */
void cpu_trap_return(void);              /* asm label: pops a trapframe, IRET */

#ifdef TVOS_PV
/* Paravirtual only (cpuops_xen.c): a page becomes or stops being a page table
 * (its kernel mapping turns read-only or writable again), pinning, the
 * console ring, the virtual timer, shutdown, the first page after the
 * hypervisor's boot area. */
void cpu_pagetable_new(void *page);
void cpu_pagetable_free(void *page);
void cpu_pagetable_pin(pde_t *pgdir);
void cpu_pagetable_unpin(pde_t *pgdir);
pde_t *cpu_boot_pgdir(void);
u32 cpu_boot_free_start(void);
void cpu_console_write(const char *s, u32 len);
void cpu_timer_start(u32 hz);
void cpu_shutdown(u8 value) __attribute__((noreturn));
/* The machine state the kernel set through this layer, as the probe reports
 * it: descriptor-table registers, LDTR, TR. */
struct cpu_virtual_state { u32 gdt_base, idt_base; u16 gdt_limit, idt_limit, ldtr, tr; };
extern struct cpu_virtual_state cpu_virtual;
#endif

#endif
