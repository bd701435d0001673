/* tsc: the time-stamp counter under a monitor.
 *
 * The simulated PC's TSC counts retired instructions (SDM Vol. 3B §17.17
 * lets it count at any constant rate; counting instructions makes guest
 * time deterministic), so every value below is exact on the bare PC, and a
 * monitor must give the guest the same: its TSC counts the guest's own
 * instructions, whether they ran directly, were interpreted or translated,
 * never the host's.  RDTSC is #GP(0) at CPL > 0 with CR4.TSD (SDM Vol. 2B
 * RDTSC); WRMSR to IA32_TSC (0x10) sets the counter (SDM Vol. 4).
 * Absolute values are "[platform]": QEMU's TSC counts real time.
 */
#include "hk.h"

static inline u32 rdtsc_lo(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return lo;
}

static volatile u32 t_user, cr4_saved;

static void user_rdtsc(void)
{
    t_user = rdtsc_lo();
    hk_user_return();
}

static void put_delta(const char *what, u32 d, int exact)
{
    hk_prefix();
    puts(what);
    puts(exact ? ": " : ": [platform] ");
    putdec(d);
    putc('\n');
}

static void nothing(u32 arg) { (void)arg; __asm__ volatile("int3"); }

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("tsc", magic, mbi);
    u32 t0 = rdtsc_lo();
    hk_prefix(); puts("[platform] tsc at start "); putdec(t0); putc('\n');

    /* A loop of exactly 3 * 1000 + 1 instructions between two reads. */
    u32 a = rdtsc_lo();
    __asm__ volatile("mov $1000, %%ecx\n1: nop\n dec %%ecx\n jnz 1b" ::: "ecx", "cc");
    u32 b = rdtsc_lo();
    hk_prefix(); puts("loop of 1000: more than 3000: "); puts(b - a > 3000 ? "yes" : "no"); putc('\n');
    put_delta("loop of 1000, counted", b - a, 0);

    /* Across a trap the guest handles itself (INT3 through its IDT). */
    a = rdtsc_lo();
    hk_try(nothing, 0);
    b = rdtsc_lo();
    put_delta("across an int3 and its handler", b - a, 0);

    /* Privileged instructions a monitor emulates count as one each. */
    a = rdtsc_lo();
    __asm__ volatile("cli\n sti\n cli\n sti" ::: "memory");
    b = rdtsc_lo();
    put_delta("across cli sti cli sti", b - a, 0);

    /* WRMSR IA32_TSC, then read it back with RDMSR and RDTSC. */
    __asm__ volatile("wrmsr" : : "c"(0x10), "a"(0x40000000u), "d"(0));
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x10));
    u32 c = rdtsc_lo();
    /* [platform]: QEMU 7.2 TCG does not read back what WRMSR wrote here. */
    hk_prefix(); puts("[platform] after wrmsr 0x40000000: rdmsr runs on from it: ");
    puts(lo - 0x40000000u < (1u << 28) && hi == 0 ? "yes" : "no"); putc('\n');
    put_delta("rdmsr then rdtsc", c - lo, 0);

    /* Ring 3: allowed with CR4.TSD clear, #GP(0) with it set. */
    int v = hk_user(user_rdtsc, 0x202);
    hk_report("rdtsc at ring 3, TSD clear", v == 0x80 ? -1 : v);
    u32 cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4 | 4));
    v = hk_user(user_rdtsc, 0x202);
    hk_report("rdtsc at ring 3, TSD set", v == 0x80 ? -1 : v);
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4));
    hk_done();
}
