/* hk.c: descriptor tables, the trap handler, paging and PIC/PIT helpers
 * shared by the hostile kernels (see hk.h). */
#include "hk.h"

struct tss {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
};

const char *hk_name = "hk";
struct seg_desc hk_gdt[HK_GDT_SLOTS];
struct gate_desc hk_idt[256] __attribute__((aligned(8)));
struct dt_ptr hk_gdt_ptr, hk_idt_ptr;
u32 hk_pd[1024] __attribute__((aligned(4096)));
u32 hk_pt0[1024] __attribute__((aligned(4096)));
volatile u32 hk_vec, hk_err, hk_cr2, hk_fault_eip;
volatile u32 hk_rec_eip, hk_rec_esp;
volatile u32 hk_irqs[16];
u32 hk_ram_end;
void (*hk_irq_hook)(u32 irq);
void (*volatile hk_user_fn)(void);
volatile u32 hk_user_eflags;

static struct tss hk_tss;
static u8 hk_kstack[8192] __attribute__((aligned(16)));
extern char hk_stub_base[];
extern void hk_user_enter(u32);

void hk_prefix(void)
{
    puts(hk_name);
    puts(": ");
}

void hk_line(const char *what)
{
    hk_prefix();
    puts(what);
    putc('\n');
}

static const char *const exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "vector 9", "#TS", "#NP",
    "#SS", "#GP", "#PF", "vector 15", "#MF", "#AC", "#MC", "#XM",
};

static void put_vector(u32 v)
{
    if (v < 32 && exc_names[v]) {
        puts(exc_names[v]);
    } else {
        puts("vector ");
        puthex(v, 2);
    }
}

void hk_put_fault(int vector)
{
    if (vector < 0) {
        puts("no fault");
        return;
    }
    put_vector((u32)vector);
    if (vector == 8 || (vector >= 10 && vector <= 14) || vector == 17) {
        puts(" err=");
        puthex(hk_err, 4);
    }
    if (vector == 14) {
        puts(" cr2=");
        puthex(hk_cr2, 8);
    }
}

void hk_report(const char *what, int vector)
{
    hk_prefix();
    puts(what);
    puts(": ");
    hk_put_fault(vector);
    putc('\n');
}

void hk_trap(struct hk_frame *f)
{
    u32 v = f->vector;
    if (v >= 0x20 && v < 0x30) {
        u32 irq = v - 0x20;
        hk_irqs[irq]++;
        if (hk_irq_hook)
            hk_irq_hook(irq);
        if (irq >= 8)
            outb(0xa0, 0x20);
        outb(0x20, 0x20);
        return;
    }
    if (v == 0x80 && f->eax == 1 && !hk_rec_eip) {
        putc((char)f->ebx);
        return;
    }
    if (hk_rec_eip) {
        u32 cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        hk_vec = v;
        hk_err = f->err;
        hk_cr2 = cr2;
        hk_fault_eip = f->eip;
        /* Resume at hk_try's recovery point, at CPL 0 on this stack. */
        f->eip = hk_rec_eip;
        f->cs = KCODE;
        f->eflags &= ~(0x3000u | 0x100u);   /* IOPL 0, TF 0 */
        f->ds = f->es = KDATA;
        hk_rec_eip = 0;
        return;
    }
    hk_prefix();
    puts("unexpected ");
    put_vector(v);
    puts(" err=");
    puthex(f->err, 4);
    puts(" at ");
    puthex(f->cs, 4);
    putc(':');
    puthex(f->eip, 8);
    putc('\n');
    tk_exit(3);
}

void hk_init(const char *name, u32 magic, struct mb_info *mbi)
{
    hk_name = name;
    serial_init();
    hk_line("start");
    if (magic != 0x2BADB002) {
        hk_line("bad multiboot magic");
        tk_exit(2);
    }
    u32 ram = 16u << 20;
    if (mbi && (mbi->flags & 1))
        ram = (mbi->mem_upper + 1024) * 1024;
    hk_ram_end = (ram + 0x3fffff) & ~0x3fffffu;

    hk_tss.ss0 = KDATA;
    hk_tss.esp0 = (u32)hk_kstack + sizeof hk_kstack;
    hk_tss.iomap_base = sizeof hk_tss;    /* no I/O bitmap */
    hk_gdt[1] = SEG(0, 0xfffff, 0x9b, 0xc);
    hk_gdt[2] = SEG(0, 0xfffff, 0x93, 0xc);
    hk_gdt[3] = SEG(0, 0xfffff, 0xfb, 0xc);
    hk_gdt[4] = SEG(0, 0xfffff, 0xf3, 0xc);
    hk_gdt[5] = SEG((u32)&hk_tss, sizeof hk_tss - 1, 0x89, 0x0);
    hk_gdt_ptr = (struct dt_ptr){ sizeof hk_gdt - 1, (u32)hk_gdt };
    for (int v = 0; v < 256; v++)
        set_gate(&hk_idt[v], (void (*)(void))(hk_stub_base + 16 * v), KCODE, (v == 3 || v == 0x80) ? 0xee : 0x8e);
    hk_idt_ptr = (struct dt_ptr){ sizeof hk_idt - 1, (u32)hk_idt };
    __asm__ volatile(
        "lgdt %0\n\t"
        "lidt %1\n\t"
        "ljmp $0x08, $1f\n"
        "1:\n\t"
        "movw $0x10, %%ax\n\t"
        "movw %%ax, %%ds\n\t movw %%ax, %%es\n\t movw %%ax, %%ss\n\t"
        "movw %%ax, %%fs\n\t movw %%ax, %%gs\n\t"
        "movw $0x28, %%ax\n\t"
        "ltr %%ax"
        : : "m"(hk_gdt_ptr), "m"(hk_idt_ptr) : "eax", "memory");
    /* The BIOS leaves the PICs at vectors 8-15, over the exceptions: move them
     * to 0x20-0x2f and mask every line until a kernel wants one. */
    hk_pic_remap(0xff, 0xff);
}

int hk_user(void (*fn)(void), u32 eflags)
{
    hk_user_fn = fn;
    hk_user_eflags = eflags | 0x2;
    return hk_try(hk_user_enter, 0);
}

void hk_paging_on(void)
{
    for (u32 i = 0; i < 1024; i++)
        hk_pt0[i] = (i << 12) | PG_P | PG_W;
    hk_pd[0] = (u32)hk_pt0 | PG_P | PG_W;
    u32 cr0, cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | CR4_PSE));
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | CR0_PG) : "memory");
}

void hk_paging_off(void)
{
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 & ~CR0_PG) : "memory");
}

void hk_invlpg(u32 lin)
{
    __asm__ volatile("invlpg (%0)" : : "r"(lin) : "memory");
}

void hk_pic_remap(u8 master_mask, u8 slave_mask)
{
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, master_mask); outb(0xa1, slave_mask);
}

void hk_pit(u16 divisor)
{
    outb(0x43, 0x34);
    outb(0x40, (u8)divisor);
    outb(0x40, (u8)(divisor >> 8));
}

void hk_done(void)
{
    hk_line("done");
    tk_exit(0);
}
