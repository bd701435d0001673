/* paging-timer: a test kernel that exercises the paging unit and the timer.
 *
 * 1. Loads its own GDT (flat ring-0 code and data) and IDT.
 * 2. Builds a page directory: PDE 0 points to a page table of 4 KiB pages
 *    identity-mapping 0-4 MiB, except that the last 4 KiB page aliases a
 *    page of the kernel's bss; PDE 2 is a 4 MiB PSE page that maps
 *    virtual 8 MiB to physical 0.  Enables CR4.PSE and CR0.PG, then checks
 *    both aliases by writing through one address and reading another.
 * 3. Remaps the 8259 PIC to vectors 0x20-0x2f, masks all but IRQ 0, and
 *    programs PIT channel 0 for 100 Hz.
 * 4. Takes N timer interrupts (ticks=N on the command line, default 10),
 *    halting between them, and prints a line that does not depend on speed.
 */
#include "tk.h"

#define KCODE 0x08
#define KDATA 0x10
#define PG_P  0x001
#define PG_W  0x002
#define PG_PS 0x080
#define CR0_PG 0x80000000u
#define CR4_PSE 0x00000010u

static struct seg_desc gdt[3];
static struct gate_desc idt[256];
static u32 page_dir[1024] __attribute__((aligned(4096)));
static u32 page_table[1024] __attribute__((aligned(4096)));
static volatile u32 alias_target[1024] __attribute__((aligned(4096)));
static volatile u32 ticks;
static volatile u32 pse_marker = 0x5e5e1234;

extern void irq0_entry(void);
#define X(n) extern void exc##n(void);
X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31)
#undef X
static void (*const exc_entries[32])(void) = {
    exc0, exc1, exc2, exc3, exc4, exc5, exc6, exc7, exc8, exc9, exc10, exc11, exc12, exc13,
    exc14, exc15, exc16, exc17, exc18, exc19, exc20, exc21, exc22, exc23, exc24, exc25,
    exc26, exc27, exc28, exc29, exc30, exc31,
};

void exception(u32 vector)
{
    u32 cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    puts("paging-timer: unexpected exception ");
    putdec(vector);
    puts(" cr2=");
    puthex(cr2, 8);
    putc('\n');
    tk_exit(3);
}

void timer_tick(void)
{
    ticks++;
    outb(0x20, 0x20);   /* EOI to the master PIC */
}

static void setup_descriptors(void)
{
    gdt[0] = (struct seg_desc){0, 0};
    gdt[1] = SEG(0, 0xfffff, 0x9b, 0xc);   /* ring-0 code, 4 GiB */
    gdt[2] = SEG(0, 0xfffff, 0x93, 0xc);   /* ring-0 data, 4 GiB */
    struct dt_ptr gp = { sizeof gdt - 1, (u32)gdt };
    __asm__ volatile(
        "lgdt %0\n\t"
        "ljmp $0x08, $1f\n"
        "1:\n\t"
        "movw $0x10, %%ax\n\t"
        "movw %%ax, %%ds\n\t movw %%ax, %%es\n\t movw %%ax, %%ss\n\t"
        "movw %%ax, %%fs\n\t movw %%ax, %%gs"
        : : "m"(gp) : "eax", "memory");

    for (int v = 0; v < 32; v++)
        set_gate(&idt[v], exc_entries[v], KCODE, 0x8e);   /* interrupt gate, DPL 0 */
    set_gate(&idt[0x20], irq0_entry, KCODE, 0x8e);
    struct dt_ptr ip = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(ip));
}

static void setup_paging(void)
{
    for (u32 i = 0; i < 1024; i++)
        page_table[i] = (i << 12) | PG_P | PG_W;
    /* Last 4 KiB page of the first 4 MiB aliases alias_target. */
    page_table[1023] = (u32)alias_target | PG_P | PG_W;
    page_dir[0] = (u32)page_table | PG_P | PG_W;
    page_dir[2] = 0x00000000 | PG_P | PG_W | PG_PS;   /* 8 MiB -> 0, 4 MiB page */

    u32 cr4, cr0;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | CR4_PSE));
    __asm__ volatile("mov %0, %%cr3" : : "r"(page_dir) : "memory");
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | CR0_PG) : "memory");
}

static int check_paging(void)
{
    int bad = 0;
    volatile u32 *alias4k = (volatile u32 *)0x003ff000;
    alias4k[5] = 0xa11a5001;
    if (alias_target[5] != 0xa11a5001) {
        puts("paging-timer: 4 KiB alias FAILED\n");
        bad = 1;
    } else {
        puts("paging-timer: 4 KiB page alias ok\n");
    }
    volatile u32 *alias4m = (volatile u32 *)(0x00800000 + (u32)&pse_marker);
    *alias4m = 0x4d4d4d4d;
    if (pse_marker != 0x4d4d4d4d) {
        puts("paging-timer: 4 MiB PSE alias FAILED\n");
        bad = 1;
    } else {
        puts("paging-timer: 4 MiB PSE page alias ok\n");
    }
    return bad;
}

static void setup_timer(void)
{
    /* 8259 pair: ICW1 edge/cascade/ICW4, ICW2 vector bases, ICW3 wiring,
     * ICW4 8086 mode; then mask everything except IRQ 0. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xfe); outb(0xa1, 0xff);

    /* PIT channel 0, lobyte/hibyte, mode 2 (rate generator), 100 Hz. */
    u16 divisor = 11932;   /* 1193182 Hz / 100 */
    outb(0x43, 0x34);
    outb(0x40, (u8)divisor);
    outb(0x40, (u8)(divisor >> 8));
}

void kmain(u32 magic, struct mb_info *mbi)
{
    serial_init();
    puts("paging-timer: start\n");
    if (magic != 0x2BADB002) {
        puts("paging-timer: bad multiboot magic\n");
        tk_exit(2);
    }
    u32 want = cmdline_uint(mbi, "ticks", 10);
    if (want == 0 || want > 100000) {
        puts("paging-timer: ticks must be 1..100000\n");
        tk_exit(2);
    }
    setup_descriptors();
    puts("paging-timer: gdt and idt loaded\n");
    setup_paging();
    int bad = check_paging();
    setup_timer();

    u32 halts = 0;
    __asm__ volatile("sti");
    while (ticks < want) {
        __asm__ volatile("hlt");
        halts++;
    }
    __asm__ volatile("cli");
    /* halts >= ticks always; only whether the count was reached is printed. */
    puts("paging-timer: took ");
    putdec(want);
    puts(" timer interrupts at 100 Hz with HLT between them\n");
    if (halts < want)
        bad = 1;
    puts(bad ? "paging-timer: FAILED\n" : "paging-timer: done\n");
    tk_exit(bad ? 1 : 0);
}
