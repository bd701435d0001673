/* ring3: privilege levels, the TSS and system calls.
 *
 * The GDT has ring-0 code/data (0x08/0x10), ring-3 code/data (0x1b/0x23
 * with RPL 3) and a 32-bit TSS (0x28) whose SS0:ESP0 the CPU uses to find
 * the kernel stack when a trap arrives from ring 3.  IDT vector 0x80 is an
 * interrupt gate with DPL 3, so user code may use INT 0x80; vector 13 (#GP)
 * has DPL 0.  The kernel IRETs to ring 3; the user program makes system
 * calls (write, report-CPL, exit), executes one CLI that must fault, and
 * ends with the exit call, which leaves through the debug-exit port.
 */
#include "tk.h"

struct frame {
    u32 es, ds;
    u32 edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
    u32 vector, err;
    u32 eip, cs, eflags, user_esp, user_ss;   /* last two only from ring 3 */
};

struct tss {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
};

static struct seg_desc gdt[6];
static struct gate_desc idt[256];
static struct tss tss;
static u8 kernel_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(16)));
static int failures;
static int gp_seen;

extern void gp_entry(void), syscall_entry(void), other_entry(void);
extern void enter_user(u32 eip, u32 esp) __attribute__((noreturn));
extern void user_main(void);

void trap(struct frame *f)
{
    u32 cpl = f->cs & 3;
    if (f->vector == 0x80) {
        switch (f->eax) {
        case 1:   /* write(ebx = buffer, ecx = length) */
            for (u32 i = 0; i < f->ecx; i++)
                putc(((const char *)f->ebx)[i]);
            return;
        case 2:   /* exit(ebx = status) */
            puts("ring3: exit syscall from cpl ");
            putdec(cpl);
            putc('\n');
            if (!gp_seen)
                failures++;
            puts(failures ? "ring3: FAILED\n" : "ring3: done\n");
            tk_exit(failures ? 1 : (u8)f->ebx);
        case 3:   /* report the user's CPL as seen by the user */
            puts("ring3: user reads cpl ");
            putdec(f->ebx);
            puts(", trap frame cs rpl ");
            putdec(cpl);
            putc('\n');
            if (f->ebx != 3 || cpl != 3)
                failures++;
            return;
        }
        puts("ring3: bad syscall\n");
        tk_exit(1);
    }
    if (f->vector == 13 && cpl == 3 && *(u8 *)f->eip == 0xfa) {
        puts("ring3: #GP from cpl 3 on cli, skipped\n");
        gp_seen = 1;
        f->eip += 1;
        return;
    }
    puts("ring3: unexpected trap ");
    putdec(f->vector);
    puts(" at ");
    puthex(f->eip, 8);
    putc('\n');
    tk_exit(3);
}

void kmain(u32 magic, struct mb_info *mbi)
{
    (void)mbi;
    serial_init();
    puts("ring3: start\n");
    if (magic != 0x2BADB002)
        tk_exit(2);

    tss.ss0 = 0x10;
    tss.esp0 = (u32)kernel_stack + sizeof kernel_stack;
    tss.iomap_base = sizeof tss;   /* no I/O bitmap: all ports need IOPL */

    gdt[1] = SEG(0, 0xfffff, 0x9b, 0xc);   /* ring-0 code */
    gdt[2] = SEG(0, 0xfffff, 0x93, 0xc);   /* ring-0 data */
    gdt[3] = SEG(0, 0xfffff, 0xfb, 0xc);   /* ring-3 code */
    gdt[4] = SEG(0, 0xfffff, 0xf3, 0xc);   /* ring-3 data */
    gdt[5] = SEG((u32)&tss, sizeof tss - 1, 0x89, 0x0);   /* available 32-bit TSS */
    struct dt_ptr gp = { sizeof gdt - 1, (u32)gdt };
    __asm__ volatile(
        "lgdt %0\n\t"
        "ljmp $0x08, $1f\n"
        "1:\n\t"
        "movw $0x10, %%ax\n\t"
        "movw %%ax, %%ds\n\t movw %%ax, %%es\n\t movw %%ax, %%ss\n\t"
        "movw %%ax, %%fs\n\t movw %%ax, %%gs\n\t"
        "movw $0x28, %%ax\n\t"
        "ltr %%ax"
        : : "m"(gp) : "eax", "memory");

    for (int v = 0; v < 256; v++)
        set_gate(&idt[v], other_entry, 0x08, 0x8e);
    set_gate(&idt[13], gp_entry, 0x08, 0x8e);
    set_gate(&idt[0x80], syscall_entry, 0x08, 0xee);   /* DPL 3: INT 0x80 allowed */
    struct dt_ptr ip = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(ip));

    u16 tr;
    __asm__ volatile("str %0" : "=r"(tr));
    puts("ring3: tss loaded, tr=");
    puthex(tr, 4);
    puts(", dropping to ring 3\n");
    enter_user((u32)user_main, (u32)user_stack + sizeof user_stack);
}
