/* rings: run code at rings 1 and 2.
 *
 * A monitor that compresses the guest's rings must not take guest ring 1
 * for the guest kernel: at rings 1 and 2 a privileged instruction raises
 * #GP(0) (SDM Vol. 3A §5.9), CLI and IN are allowed only with CPL <= IOPL
 * (Vol. 1 §18.5, Vol. 2 CLI), and supervisor pages are accessible (Vol. 3A
 * §4.6: CPL < 3 is a supervisor-mode access).  Each probe runs at ring 1 and
 * ring 2, with IOPL 0 and IOPL 1, paging on, and prints what it got.
 */
#include "hk.h"

#define R1_CODE ((HK_SPARE + 0) * 8 + 1)
#define R1_DATA ((HK_SPARE + 1) * 8 + 1)
#define R2_CODE ((HK_SPARE + 2) * 8 + 2)
#define R2_DATA ((HK_SPARE + 3) * 8 + 2)

u8 ring_stack[4096] __attribute__((aligned(16), used));
volatile u32 ring_cs, ring_ss, ring_eflags, ring_fn;
static volatile u32 sup_value;

extern void ring_enter(u32);
/* ring_enter(unused): IRET to ring_fn at the privilege of ring_cs (called through hk_try). */
__asm__(".globl ring_enter\nring_enter:\n"
        "\tmovl ring_ss, %eax\n\tmovw %ax, %ds\n\tmovw %ax, %es\n"
        "\tpushl ring_ss\n\tpushl $ring_stack + 4096\n\tpushl ring_eflags\n"
        "\tpushl ring_cs\n\tpushl ring_fn\n\tiret\n");

static void p_cli(void) { __asm__ volatile("cli"); hk_user_return(); }
static void p_sti(void) { __asm__ volatile("sti"); hk_user_return(); }
static void p_in(void) { u8 v; __asm__ volatile("inb $0x80, %0" : "=a"(v)); (void)v; hk_user_return(); }
static void p_cr0(void) { u32 v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); (void)v; hk_user_return(); }
static void p_hlt(void) { __asm__ volatile("hlt"); hk_user_return(); }
static void p_lidt(void) { __asm__ volatile("lidt hk_idt_ptr"); hk_user_return(); }
static void p_sup(void) { sup_value = hk_pd[0]; hk_user_return(); }

static const struct { const char *name; void (*fn)(void); } probes[] = {
    { "cli", p_cli }, { "sti", p_sti }, { "in", p_in }, { "mov from cr0", p_cr0 },
    { "hlt", p_hlt }, { "lidt", p_lidt }, { "read a supervisor page", p_sup },
};

static int at_ring(int ring, u32 iopl, void (*fn)(void))
{
    ring_cs = ring == 1 ? R1_CODE : R2_CODE;
    ring_ss = ring == 1 ? R1_DATA : R2_DATA;
    ring_eflags = 0x2 | (iopl << 12);
    ring_fn = (u32)fn;
    return hk_try(ring_enter, 0);
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("rings", magic, mbi);
    /* code and data segments of DPL 1 and DPL 2, flat 4 GiB */
    hk_gdt[HK_SPARE + 0] = SEG(0, 0xfffff, 0xbb, 0xc);
    hk_gdt[HK_SPARE + 1] = SEG(0, 0xfffff, 0xb3, 0xc);
    hk_gdt[HK_SPARE + 2] = SEG(0, 0xfffff, 0xdb, 0xc);
    hk_gdt[HK_SPARE + 3] = SEG(0, 0xfffff, 0xd3, 0xc);
    hk_paging_on();
    for (int ring = 1; ring <= 2; ring++) {
        for (u32 iopl = 0; iopl <= 1; iopl++) {
            for (unsigned i = 0; i < sizeof probes / sizeof probes[0]; i++) {
                sup_value = 0;
                int v = at_ring(ring, iopl, probes[i].fn);
                hk_prefix();
                puts("ring ");
                putdec(ring);
                puts(" IOPL ");
                putdec(iopl);
                puts(": ");
                puts(probes[i].name);
                puts(": ");
                hk_put_fault(v == 0x80 ? -1 : v);
                if (probes[i].fn == p_sup && v == 0x80)
                    puts(sup_value == hk_pd[0] ? " (read the page)" : " (read something else)");
                putc('\n');
            }
        }
    }
    hk_done();
}
