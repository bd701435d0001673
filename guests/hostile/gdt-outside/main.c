/* gdt-outside: descriptor tables that point where they should not.
 *
 * The GDTR holds a linear address and a limit; nothing stops a kernel from
 * pointing it beyond RAM or at the top 4 MiB, where trapvisor keeps its own
 * (shadow) GDT in every address space.  What a real machine does:
 *
 * - a selector beyond the GDT limit: #GP(selector);
 * - descriptors read from beyond RAM: whatever the bus returns (open bus on
 *   the simulated PC: all ones, a conforming code segment; zero on QEMU,
 *   a null descriptor) -- lines marked [platform];
 * - a GDT at linear 0xFFC01000 that the kernel's own page tables map to its
 *   own frame: an ordinary GDT; loads and stores through it see the kernel's
 *   memory, never the monitor's;
 * - any exception with a GDT the CPU cannot use: triple fault (shutdown).
 */
#include "hk.h"

#define WINDOW_GDT 0xffc01000u

static struct seg_desc small_gdt[3];
static struct seg_desc window_gdt[512] __attribute__((aligned(4096)));
static u32 pt_window[1024] __attribute__((aligned(4096)));
static volatile u32 marker[1024] __attribute__((aligned(4096)));
static struct dt_ptr probe_ptr;
static volatile u32 r1, r2;

static void lgdt_probe(void)
{
    __asm__ volatile("lgdt %0" : : "m"(probe_ptr));
}

static void load_ds(u32 sel)
{
    lgdt_probe();
    __asm__ volatile("movw %w0, %%ds" : : "r"(sel));
}

static void load_ds_and_read(u32 sel)
{
    lgdt_probe();
    __asm__ volatile(
        "movw %w2, %%ds\n\t"
        "movl %%ds:0xffc01009, %0\n\t"
        "movl %%ds:0x00001001, %1\n\t"
        "movw %%ss, %%ax\n\t"
        "movw %%ax, %%ds"
        : "=r"(r1), "=r"(r2) : "r"(sel) : "eax", "memory");
}

static void far_jump(u32 sel)
{
    lgdt_probe();
    struct { u32 off; u16 sel; } __attribute__((packed)) target = { 0, (u16)sel };
    __asm__ volatile(
        "movl $1f, %0\n\t"
        "ljmp *%0\n"
        "1:"
        : : "m"(target) : "memory");
}

static void do_ltr(u32 sel)
{
    lgdt_probe();
    __asm__ volatile("ltr %w0" : : "r"(sel));
}

static void do_lldt(u32 sel)
{
    lgdt_probe();
    __asm__ volatile("lldt %w0" : : "r"(sel));
}

static void window_gdt_probe(u32 unused)
{
    (void)unused;
    lgdt_probe();
    /* Reload CS and a data segment through the GDT at 0xFFC01000. */
    __asm__ volatile("ljmp $0x08, $1f\n1:" ::: "memory");
    __asm__ volatile(
        "movw $0x30, %%ax\n\t"
        "movw %%ax, %%es\n\t"
        "movl %%es:0, %0"
        : "=r"(r1) : : "eax", "memory");
    /* Write a new descriptor into the GDT through its window address... */
    volatile struct seg_desc *g = (volatile struct seg_desc *)WINDOW_GDT;
    struct seg_desc d = SEG((u32)&marker[1], 0xfff, 0x93, 0x4);
    g[7].lo = d.lo;
    g[7].hi = d.hi;
    /* ... and use it. */
    __asm__ volatile(
        "movw $0x38, %%ax\n\t"
        "movw %%ax, %%es\n\t"
        "movl %%es:0, %0"
        : "=r"(r2) : : "eax", "memory");
}

static void wrap_try(void (*fn)(u32), u32 arg, const char *what)
{
    int v = hk_try(fn, arg);
    hk_report(what, v);
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("gdt-outside", magic, mbi);

    /* 1. A short GDT: selectors past its limit fault. */
    small_gdt[1] = hk_gdt[1];
    small_gdt[2] = hk_gdt[2];
    probe_ptr = (struct dt_ptr){ sizeof small_gdt - 1, (u32)small_gdt };
    wrap_try((void (*)(u32))load_ds, 0x10, "short gdt, mov ds 0x10");
    wrap_try((void (*)(u32))load_ds, 0x20, "short gdt, mov ds 0x20 (past the limit)");
    wrap_try((void (*)(u32))far_jump, 0x18, "short gdt, ljmp 0x18 (past the limit)");

    /* 2. A GDT straddling the end of RAM: slots 0-2 in RAM, 3.. beyond. */
    struct seg_desc *tail = (struct seg_desc *)(hk_ram_end - 24);
    tail[0] = hk_gdt[0];
    tail[1] = hk_gdt[1];
    tail[2] = hk_gdt[2];
    probe_ptr = (struct dt_ptr){ 0xffff, hk_ram_end - 24 };
    wrap_try((void (*)(u32))load_ds, 0x10, "gdt at ram end, mov ds 0x10 (in RAM)");
    r1 = r2 = 0x5a5a5a5a;
    int v = hk_try((void (*)(u32))load_ds_and_read, 0x18);
    hk_prefix();
    puts("[platform] gdt at ram end, mov ds 0x18 (beyond RAM): ");
    hk_put_fault(v);
    if (v < 0) {
        puts(", ds:0xffc01009 = ");
        puthex(r1, 8);
        puts(", ds:0x1001 = ");
        puthex(r2, 8);
    }
    putc('\n');
    wrap_try((void (*)(u32))far_jump, 0x20, "gdt at ram end, ljmp 0x20 (beyond RAM)");
    wrap_try((void (*)(u32))do_ltr, 0x28, "gdt at ram end, ltr 0x28 (beyond RAM)");
    wrap_try((void (*)(u32))do_lldt, 0x30, "gdt at ram end, lldt 0x30 (beyond RAM)");

    /* 3. A GDT at 0xFFC01000, the monitor's GDT address under trapvisor,
     *    mapped by the kernel's own page tables to its own frame. */
    for (int i = 0; i < HK_GDT_SLOTS; i++)
        window_gdt[i] = hk_gdt[i];
    window_gdt[6] = SEG((u32)&marker[0], 0xfff, 0x93, 0x4);
    marker[0] = 0x600d0001;
    marker[1] = 0x600d0002;
    hk_paging_on();
    pt_window[1] = (u32)window_gdt | PG_P | PG_W;      /* 0xFFC01000 */
    hk_pd[1023] = (u32)pt_window | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    probe_ptr = (struct dt_ptr){ 0x7f, WINDOW_GDT };
    r1 = r2 = 0x5a5a5a5a;
    v = hk_try(window_gdt_probe, 0);
    hk_prefix();
    puts("gdt at 0xffc01000 (own mapping): ");
    hk_put_fault(v);
    puts(", es(0x30):0 = ");
    puthex(r1, 8);
    puts(", descriptor 0x38 written through the window, es(0x38):0 = ");
    puthex(r2, 8);
    putc('\n');
    u32 hi = window_gdt[7].hi;
    hk_line((hi & 0xff00) == 0x9300 || (hi & 0xff00) == 0x9200
            ? "the descriptor written at 0xffc01038 is in the kernel's own frame"
            : "the descriptor written at 0xffc01038 is NOT in the kernel's own frame");
    u32 gdtr[2];
    lgdt_probe();
    __asm__ volatile("sgdt %0" : "=m"(*(struct dt_ptr *)gdtr));
    __asm__ volatile("lgdt %0" : : "m"(hk_gdt_ptr));
    hk_prefix();
    puts("[sensitive] sgdt after lgdt 0xffc01000: base ");
    puthex((gdtr[0] >> 16) | (gdtr[1] << 16), 8);
    putc('\n');
    hk_paging_off();

    if (cmdline_uint(mbi, "final", 1)) {
        /* 4. The end: an exception with the GDT entirely beyond RAM. */
        hk_line("int3 with the gdt beyond RAM (a real machine shuts down)");
        probe_ptr = (struct dt_ptr){ 0xffff, 0x7fff0000 };
        lgdt_probe();
        __asm__ volatile("int3");
        hk_line("still running after int3 with the gdt beyond RAM");
        tk_exit(1);
    }
    hk_done();
}
