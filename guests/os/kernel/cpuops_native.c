/* cpuops_native.c: the CPU-ops layer for bare hardware (and for full
 * virtualization, where the hypervisor traps what it must): each operation
 * is the plain instruction.  See cpuops.h for the contract. */
#include "cpuops.h"
#include "kernel.h"

void cpu_irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
void cpu_irq_enable(void)  { __asm__ volatile("sti" ::: "memory"); }

u32 cpu_read_flags(void)
{
    u32 f;
    __asm__ volatile("pushfl; popl %0" : "=r"(f));
    return f;
}

u32 cpu_irq_save(void)
{
    u32 f;
    __asm__ volatile("pushfl; popl %0; cli" : "=r"(f) : : "memory");
    return f;
}

void cpu_irq_restore(u32 flags)
{
    __asm__ volatile("pushl %0; popfl" : : "r"(flags) : "memory", "cc");
}

/* STI only takes effect after the next instruction, so an interrupt that is
 * already pending wakes the HLT instead of being lost between the two. */
void cpu_wait_for_interrupt(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

void cpu_halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

u32 cpu_read_cr0(void) { u32 v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
void cpu_write_cr0(u32 v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
u32 cpu_read_cr2(void) { u32 v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
u32 cpu_read_cr3(void) { u32 v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
void cpu_write_cr3(u32 v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
u32 cpu_read_cr4(void) { u32 v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
void cpu_write_cr4(u32 v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }

struct __attribute__((packed)) dtr { u16 limit; u32 base; };

void cpu_load_gdt(const struct segdesc *gdt, u16 limit)
{
    struct dtr d = { limit, (u32)gdt };
    /* A far jump reloads CS; the data segment registers are reloaded by
     * hand, since LGDT alone leaves the old hidden descriptors in use. */
    __asm__ volatile(
        "lgdt %0\n\t"
        "ljmp %1, $1f\n"
        "1:\n\t"
        "movw %w2, %%ax\n\t"
        "movw %%ax, %%ds\n\t"
        "movw %%ax, %%es\n\t"
        "movw %%ax, %%fs\n\t"
        "movw %%ax, %%gs\n\t"
        "movw %%ax, %%ss"
        : : "m"(d), "i"(KCODE_SEL), "i"(KDATA_SEL) : "eax", "memory");
}

void cpu_load_idt(const struct gatedesc *idt, u16 limit)
{
    struct dtr d = { limit, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(d));
}

void cpu_load_tr(u16 sel) { __asm__ volatile("ltr %0" : : "r"(sel)); }
void cpu_load_ldt(u16 sel) { __asm__ volatile("lldt %0" : : "r"(sel)); }

void cpu_set_idt_entry(struct gatedesc *idt, int vector, void (*entry)(void), u8 type_attr)
{
    u32 off = (u32)entry;
    struct gatedesc *g = &idt[vector];
    g->off_lo = (u16)off;
    g->sel = KCODE_SEL;
    g->zero = 0;
    g->type_attr = type_attr;
    g->off_hi = (u16)(off >> 16);
}

/* Natively a page-table entry is a plain aligned 32-bit store.  (A shadow-
 * paging or paravirtual layer intercepts exactly this function.) */
void cpu_set_pte(pte_t *slot, pte_t value) { *(volatile pte_t *)slot = value; }

void cpu_invlpg(u32 va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }

u8 cpu_inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

void cpu_outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }

void cpu_set_kernel_stack(u32 esp0)
{
    ktss.ss0 = KDATA_SEL;
    ktss.esp0 = esp0;
}
