/* map-monitor: go after the top 4 MiB of linear space.
 *
 * Under trapvisor's trap-and-emulate technique the monitor's own GDT, IDT,
 * TSS and shadow page tables are mapped at linear 0xFFC00000-0xFFFFFFFF in
 * every address space the host CPU uses (descriptor-table registers hold
 * linear addresses), and the guest kernel runs at ring 1, which the paging
 * unit counts as supervisor.  Only segment limits keep the guest out.  On a
 * real machine that range is ordinary linear space: without paging it is
 * physical addresses beyond RAM (open bus), with paging it is whatever the
 * kernel's page tables say -- here a recursive page directory, then the
 * kernel's own frames.  Every access must behave that way, and none may
 * reach the monitor.
 */
#include "hk.h"

#define WINDOW 0xffc00000u
#define NFRAMES 8

static u32 pt_window[1024] __attribute__((aligned(4096)));
static u32 pt_below[1024] __attribute__((aligned(4096)));
static volatile u32 frames[NFRAMES][1024] __attribute__((aligned(4096)));
static volatile u8 below_page[4096] __attribute__((aligned(4096)));
static volatile u32 target[1024] __attribute__((aligned(4096)));
static u32 cur, val;
static volatile u32 got;

static void rd(u32 addr) { got = hk_read32(addr); }
static void wr(u32 addr) { hk_write32(addr, val); }
static void wr_rd(u32 addr) { hk_write32(addr, val); got = hk_read32(addr); }

static void show_access(const char *what, void (*fn)(u32), u32 addr)
{
    got = 0x5a5a5a5a;
    int v = hk_try(fn, addr);
    hk_prefix();
    puts(what);
    putc(' ');
    puthex(addr, 8);
    puts(": ");
    if (v >= 0)
        hk_put_fault(v);
    else if (fn == wr)
        puts("no fault");
    else if (fn == wr_rd && got == val)
        puts("write KEPT");
    else if (fn == wr_rd && (got == 0 || got == 0xffffffffu))
        puts("write dropped, reads open bus");
    else {
        puts("reads ");
        puthex(got, 8);
    }
    putc('\n');
}

static void set_desc(int slot, struct seg_desc d)
{
    hk_gdt[slot] = d;
}

/* Store through a segment register loaded with selector `cur`. */
static void es_store(u32 off)
{
    __asm__ volatile(
        "movw %w0, %%es\n\t"
        "movl %1, %%es:(%2)"
        : : "r"(cur), "r"(val), "r"(off) : "memory");
}

static void es_load(u32 off)
{
    u32 v;
    __asm__ volatile(
        "movw %w1, %%es\n\t"
        "movl %%es:(%2), %0"
        : "=r"(v) : "r"(cur), "r"(off) : "memory");
    got = v;
}

static void far_call(u32 off)
{
    struct { u32 off; u16 sel; } __attribute__((packed)) t = { off, (u16)cur };
    u32 v;
    __asm__ volatile("lcall *%1" : "=a"(v) : "m"(t) : "memory", "ecx", "edx");
    got = v;
}

static void near_call(u32 addr)
{
    u32 v;
    __asm__ volatile("call *%1" : "=a"(v) : "r"(addr) : "memory", "ecx", "edx");
    got = v;
}

static void rep_stos(u32 addr)
{
    u32 n = 64;
    __asm__ volatile("rep stosl" : "+D"(addr), "+c"(n) : "a"(val) : "memory");
}

static void report_seg(const char *what, int v, int ok)
{
    hk_prefix();
    puts(what);
    puts(": ");
    if (v >= 0)
        hk_put_fault(v);
    else
        puts(ok ? "lands in the kernel's own frame" : "went ELSEWHERE");
    putc('\n');
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("map-monitor", magic, mbi);

    /* 1. What the sensitive instructions reveal, and reading there. */
    struct dt_ptr g, i;
    u16 tr;
    __asm__ volatile("sgdt %0" : "=m"(g));
    __asm__ volatile("sidt %0" : "=m"(i));
    __asm__ volatile("str %0" : "=r"(tr));
    hk_prefix();
    puts("[sensitive] sgdt base ");
    puthex(g.base, 8);
    puts(", sidt base ");
    puthex(i.base, 8);
    puts(", str ");
    puthex(tr, 4);
    putc('\n');
    show_access("[sensitive] read at sgdt base + 8 =", rd, g.base + 8);
    show_access("[sensitive] read at sidt base + 0x40 =", rd, i.base + 0x40);

    /* 2. No paging: the top 4 MiB is physical space beyond RAM. */
    val = 0xbad0bad0;
    u32 spots[6] = { 0xffc01000, 0xffc11000, 0xffc12000, 0xffc20000, 0xffd00000, 0xfff00000 };
    for (int k = 0; k < 6; k++)
        show_access("no paging, write+read", wr_rd, spots[k]);

    /* 3. Paging with a recursive page directory in slot 1023: the page
     *    tables appear at 0xFFC00000, the directory at 0xFFFFF000. */
    hk_paging_on();
    hk_pd[1023] = (u32)hk_pd | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    got = 0;
    int v = hk_try(rd, 0xfffff000);
    hk_prefix();
    puts("recursive map, pd[0] through 0xfffff000: ");
    if (v >= 0)
        hk_put_fault(v);
    else
        puts(got == hk_pd[0] ? "matches" : "DIFFERS");
    putc('\n');
    val = (u32)target | PG_P | PG_W;
    v = hk_try(wr, WINDOW + 4 * 0x3ff);           /* PT0 entry for 0x003FF000 */
    hk_invlpg(0x003ff000);
    target[5] = 0;
    hk_write32(0x003ff000 + 20, 0x7e57da7a);
    hk_prefix();
    puts("PTE written through 0xffc00ffc: ");
    if (v >= 0)
        hk_put_fault(v);
    else
        puts(target[5] == 0x7e57da7a ? "0x003ff000 now maps the kernel's frame"
                                      : "mapping NOT changed");
    putc('\n');
    show_access("recursive map, read", rd, 0xffc01000);
    val = 0xbad1bad1;
    show_access("recursive map, write", wr, 0xffc11000);

    /* 4. The window mapped to the kernel's own frames (PDE 1023 -> pt_window). */
    for (int k = 0; k < NFRAMES; k++)
        pt_window[k] = (u32)frames[k] | PG_P | PG_W;
    hk_pd[1023] = (u32)pt_window | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    int bad = 0;
    for (int k = 0; k < NFRAMES; k++) {
        cur = WINDOW + 0x1000 * (u32)k + 0x10 * (u32)k;
        val = 0x3c000000u | (u32)k;
        if (hk_try(wr, cur) >= 0 || frames[k][4 * k] != val)
            bad++;
        frames[k][1000] = 0x11110000u | (u32)k;
        if (hk_try(rd, WINDOW + 0x1000 * (u32)k + 4000) >= 0 || got != frames[k][1000])
            bad++;
    }
    hk_line(bad ? "own frames at 0xffc00000: accesses went ELSEWHERE"
                : "own frames at 0xffc00000: every store and load hits the kernel's frames");
    show_access("own frames, unmapped window page, read", rd, 0xffc20000);
    val = 0x51515151;
    v = hk_try(rep_stos, WINDOW + 0x1000 * 2);
    report_seg("rep stosl into 0xffc02000 with a flat es", v, frames[2][63] == 0x51515151);

    /* 5. Segments that reach the window by their base or by wrapping. */
    set_desc(HK_SPARE, SEG(WINDOW, 0xfffff, 0x93, 0xc));      /* 0x30: base 0xFFC00000, 4 GiB */
    set_desc(HK_SPARE + 1, SEG(0, 0x0, 0x97, 0x4));           /* 0x38: expand-down, B=1, limit 0 */
    set_desc(HK_SPARE + 2, SEG(0x80000000u, 0xfffff, 0x93, 0xc)); /* 0x40: base 2 GiB, wraps */
    set_desc(HK_SPARE + 3, SEG(WINDOW, 0xfffff, 0x9b, 0xc));  /* 0x48: code, base 0xFFC00000 */
    set_desc(HK_SPARE + 4, SEG(0xfff00000u, 0xfffff, 0x93, 0xc)); /* 0x50: base in the window, 4 GiB */
    __asm__ volatile("lgdt %0" : : "m"(hk_gdt_ptr));

    cur = 0x30;
    val = 0x5e600001;
    v = hk_try(es_store, 0x1004);
    report_seg("store es(base 0xffc00000):0x1004", v, frames[1][1] == val);
    frames[1][2] = 0x5e600011;
    got = 0;
    v = hk_try(es_load, 0x1008);
    report_seg("load es(base 0xffc00000):0x1008", v, got == 0x5e600011);
    cur = 0x38;
    val = 0x5e600002;
    v = hk_try(es_store, 0xffc02008);
    report_seg("store es(expand-down, limit 0):0xffc02008", v, frames[2][2] == val);
    cur = 0x40;
    val = 0x5e600003;
    v = hk_try(es_store, 0x7fc03000);
    report_seg("store es(base 0x80000000):0x7fc03000", v, frames[3][0] == val);
    val = 0x5e600004;
    v = hk_try(es_store, 0x80001000);                         /* wraps to linear 0x1000 */
    report_seg("store es(base 0x80000000):0x80001000 (wraps to 0x1000)", v,
               *(volatile u32 *)0x1000 == val);
    cur = 0x50;
    val = 0x5e600005;
    v = hk_try(es_store, 0x00300000);                         /* linear 0x00200000: wraps */
    report_seg("store es(base 0xfff00000):0x00300000 (wraps to 0x200000)", v,
               *(volatile u32 *)0x00200000 == val);

    /* A code segment based in the window: the code is the kernel's. */
    static const u8 stub[] = { 0xb8, 0xde, 0xc0, 0x0d, 0x60, 0xcb };  /* mov eax,0x600dc0de; lret */
    for (u32 k = 0; k < sizeof stub; k++)
        ((volatile u8 *)frames[4])[k] = stub[k];
    cur = 0x48;
    got = 0;
    v = hk_try(far_call, 0x4000);
    hk_prefix();
    puts("lcall into a code segment based at 0xffc00000: ");
    if (v >= 0)
        hk_put_fault(v);
    else
        puthex(got, 8);
    putc('\n');

    /* An instruction that starts below the window and ends inside it:
     * mov eax, imm32 at 0xFFBFFFFF, immediate in the window's first page. */
    pt_below[1023] = (u32)below_page | PG_P | PG_W;
    hk_pd[1022] = (u32)pt_below | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    below_page[4095] = 0xb8;
    ((volatile u8 *)frames[0])[0] = 0x44;
    ((volatile u8 *)frames[0])[1] = 0x33;
    ((volatile u8 *)frames[0])[2] = 0x22;
    ((volatile u8 *)frames[0])[3] = 0x11;
    ((volatile u8 *)frames[0])[4] = 0xc3;                     /* ret */
    got = 0;
    v = hk_try(near_call, 0xffbfffff);
    hk_prefix();
    puts("mov eax, imm32 straddling 0xffc00000: ");
    if (v >= 0)
        hk_put_fault(v);
    else
        puthex(got, 8);
    putc('\n');

    hk_done();
}
