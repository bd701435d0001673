/* idt-outside: interrupt descriptor tables that point where they should not.
 *
 * A real machine reads each gate at IDTR.base + 8 * vector, a linear
 * address: past the IDT limit it raises #GP(vector * 8 + 2), from beyond RAM
 * it reads the bus (no valid gate there: #GP(vector * 8 + 2) again), and at
 * linear 0xFFC11000 -- where trapvisor keeps its own IDT -- it reads
 * whatever the kernel's page tables map there.  An exception it cannot
 * deliver at all becomes a double fault, then a triple fault (shutdown).
 */
#include "hk.h"

#define WINDOW_IDT 0xffc11000u

static struct gate_desc window_idt[512] __attribute__((aligned(4096)));
static u32 pt_window[1024] __attribute__((aligned(4096)));
static struct dt_ptr probe_ptr;

static void lidt_probe(void)
{
    __asm__ volatile("lidt %0" : : "m"(probe_ptr));
}

static void int_0x10(u32 u) { (void)u; lidt_probe(); __asm__ volatile("int $0x10"); }
static void int_0x20(u32 u) { (void)u; lidt_probe(); __asm__ volatile("int $0x20"); }
static void int_0x40(u32 u) { (void)u; lidt_probe(); __asm__ volatile("int $0x40"); }
static void int_0x80(u32 u) { (void)u; lidt_probe(); __asm__ volatile("movl $0, %%eax\n\tint $0x80" ::: "eax"); }
static void int_0x81(u32 u) { (void)u; lidt_probe(); __asm__ volatile("int $0x81"); }
static void bad_ds(u32 u) { (void)u; lidt_probe(); __asm__ volatile("movw $0x98, %%ax\n\tmovw %%ax, %%ds" ::: "eax"); }

static void write_gate_through_window(u32 u)
{
    (void)u;
    /* Vector 0x81's gate, rewritten through its window address to lead to
     * vector 0x82's stub: the store must land in the kernel's own frame. */
    volatile u32 *g = (volatile u32 *)(WINDOW_IDT + 8 * 0x81);
    volatile u32 *src = (volatile u32 *)(WINDOW_IDT + 8 * 0x82);
    g[0] = src[0];
    g[1] = src[1];
}

static void run(const char *what, void (*fn)(u32))
{
    hk_report(what, hk_try(fn, 0));
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("idt-outside", magic, mbi);

    /* 1. A short IDT: vectors 0-15 only. */
    probe_ptr = (struct dt_ptr){ 0x7f, (u32)hk_idt };
    run("short idt (16 gates), int 0x10", int_0x10);
    run("short idt (16 gates), int 0x20", int_0x20);

    /* 2. An IDT straddling the end of RAM: gates 0-31 in RAM, the rest beyond. */
    struct gate_desc *tail = (struct gate_desc *)(hk_ram_end - 0x100);
    for (int v = 0; v < 32; v++)
        tail[v] = hk_idt[v];
    probe_ptr = (struct dt_ptr){ 0x7ff, hk_ram_end - 0x100 };
    run("idt at ram end, int 0x40 (gate beyond RAM)", int_0x40);
    run("idt at ram end, int 0x80 (gate beyond RAM)", int_0x80);
    run("idt at ram end, #GP from mov ds 0x98 (gate 13 in RAM)", bad_ds);

    /* 3. An IDT at 0xFFC11000 (the monitor's IDT under trapvisor), mapped
     *    by the kernel's own page tables to its own frame. */
    for (int v = 0; v < 256; v++)
        window_idt[v] = hk_idt[v];
    hk_paging_on();
    pt_window[0x11] = (u32)window_idt | PG_P | PG_W;
    hk_pd[1023] = (u32)pt_window | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    probe_ptr = (struct dt_ptr){ 0x7ff, WINDOW_IDT };
    run("idt at 0xffc11000 (own mapping), int 0x80", int_0x80);
    run("idt at 0xffc11000 (own mapping), #GP from mov ds 0x98", bad_ds);
    run("idt at 0xffc11000 (own mapping), int 0x81", int_0x81);
    run("idt at 0xffc11000 (own mapping), rewrite gate 0x81 through the window", write_gate_through_window);
    hk_line(window_idt[0x81].off_lo == hk_idt[0x82].off_lo
            ? "the gate written at 0xffc11408 is in the kernel's own frame"
            : "the gate written at 0xffc11408 is NOT in the kernel's own frame");
    run("idt at 0xffc11000 (own mapping), int 0x81 after the rewrite", int_0x81);
    struct dt_ptr seen;
    lidt_probe();
    __asm__ volatile("sidt %0" : "=m"(seen));
    __asm__ volatile("lidt %0" : : "m"(hk_idt_ptr));
    hk_prefix();
    puts("[sensitive] sidt after lidt 0xffc11000: base ");
    puthex(seen.base, 8);
    puts(" limit ");
    puthex(seen.limit, 4);
    putc('\n');
    hk_paging_off();

    u32 final = cmdline_uint(mbi, "final", 1);
    if (final == 1) {
        hk_line("int 0x80 with the idt beyond RAM (a real machine shuts down)");
        probe_ptr = (struct dt_ptr){ 0x7ff, 0x7fff0000 };
    } else if (final == 2) {
        hk_line("int 0x80 with the idt at 0xffc11000, paging off (a real machine shuts down)");
        probe_ptr = (struct dt_ptr){ 0x7ff, WINDOW_IDT };
    } else {
        hk_done();
    }
    lidt_probe();
    __asm__ volatile("int $0x80");
    hk_line("still running after int 0x80 with no usable idt");
    tk_exit(1);
}
