/* pt-escape: try to reach host memory through crafted page tables.
 *
 * Guest-physical addresses at or beyond the end of RAM are not memory: on a
 * PC a store there goes nowhere and a load returns the open-bus value (or a
 * device's register).  A VMM that translated guest-physical addresses
 * naively (host = partition base + gpa, or gpa itself) would instead hit the
 * next VM's partition (gpa = RAM end), the host's monitor region (gpa with
 * base + gpa wrapping past 4 GiB, e.g. 0xFFC00000 for a partition at 4 MiB),
 * or fall off the end of host memory.
 *
 * For each target frame the kernel maps it at linear 0x00400000 + 4 KiB * i
 * (PDE 1), stores a pattern at its first and last word, and reads both back.
 * Then 4 MiB PSE pages onto the same kind of targets, and a page table that
 * itself lies beyond RAM.  stage=cr3 finally loads CR3 with a frame beyond
 * RAM (the machine cannot go on: it is stopped, the VMM must not be).
 */
#include "hk.h"

#define ATTACK_BASE 0x00400000u
#define NTARGETS 12

static u32 pt_attack[1024] __attribute__((aligned(4096)));
static volatile u32 own_page[1024] __attribute__((aligned(4096)));
static u32 targets[NTARGETS];
static u32 cur_lin;
static u32 r_first, r_last;

static void probe(u32 pattern)
{
    volatile u32 *p = (volatile u32 *)cur_lin;
    p[0] = pattern;
    p[1023] = ~pattern;
    r_first = p[0];
    r_last = p[1023];
}

static void describe(u32 pattern)
{
    if (r_first == pattern && r_last == ~pattern)
        puts("write KEPT (memory there)");
    else if ((r_first == 0xffffffffu || r_first == 0) && (r_last == 0xffffffffu || r_last == 0))
        puts("write dropped, reads open bus");
    else {
        puts("reads other bytes ");
        puthex(r_first, 8);
        putc(' ');
        puthex(r_last, 8);
    }
}

static void attack(const char *kind, u32 frame, u32 lin, u32 pattern)
{
    cur_lin = lin;
    r_first = r_last = 0x5a5a5a5a;
    int v = hk_try(probe, pattern);
    hk_prefix();
    puts(kind);
    putc(' ');
    puthex(frame, 8);
    puts(": ");
    if (v >= 0) {
        hk_put_fault(v);
        putc('\n');
        return;
    }
    describe(pattern);
    putc('\n');
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("pt-escape", magic, mbi);
    u32 end = hk_ram_end;
    u32 t[NTARGETS] = {
        end,                    /* the next partition if translated naively */
        end + 0x1000,
        end + 0x3ff000,
        end + 0x400000,
        end + 0x1000000,
        0x40000000,
        0x7fff0000,             /* 2 GiB: off the end of any host memory */
        0xf0000000,
        0xff800000,             /* base + gpa wraps to host 0 for a partition at 8 MiB */
        0xffc00000,             /* ... for a partition at 4 MiB: the monitor region */
        0xffc01000,             /* ... where the monitor's GDT would be */
        0xffc20000,             /* ... its shadow page-table pool */
    };
    for (int i = 0; i < NTARGETS; i++)
        targets[i] = t[i];

    hk_paging_on();
    /* Control: an alias of the kernel's own frame works. */
    pt_attack[0] = (u32)own_page | PG_P | PG_W;
    for (int i = 0; i < NTARGETS; i++)
        pt_attack[i + 1] = targets[i] | PG_P | PG_W;
    hk_pd[1] = (u32)pt_attack | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");

    cur_lin = ATTACK_BASE;
    int v = hk_try(probe, 0x0c0ffee0);
    if (v < 0 && own_page[0] == 0x0c0ffee0 && own_page[1023] == ~0x0c0ffee0u)
        hk_line("control: alias of an own frame: write visible through both mappings");
    else
        hk_report("control: alias of an own frame FAILED", v);

    for (int i = 0; i < NTARGETS; i++)
        attack("4K page -> frame", targets[i], ATTACK_BASE + 0x1000 * (u32)(i + 1),
               0xa5a50000u | (u32)i);

    /* 4 MiB pages (PSE) onto frames beyond RAM. */
    u32 big[3] = { end, 0x7fc00000, 0xffc00000 };
    for (int i = 0; i < 3; i++) {
        hk_pd[4 + i] = big[i] | PG_P | PG_W | PG_PS;
        __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
        attack("4M page -> frame", big[i], 0x01000000u + 0x400000u * (u32)i + 0x1000,
               0x5a5a0000u | (u32)i);
    }

    /* A page directory entry whose page table lies beyond RAM: the walk
     * itself reads open bus ([platform]: what that maps depends on it). */
    hk_pd[8] = end | PG_P | PG_W;
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    cur_lin = 0x02000000;
    r_first = r_last = 0x5a5a5a5a;
    v = hk_try(probe, 0x77770000);
    hk_prefix();
    puts("[platform] page table beyond RAM: ");
    if (v >= 0)
        hk_put_fault(v);
    else
        describe(0x77770000);
    putc('\n');

    if (cmdline_uint(mbi, "cr3", 0)) {
        hk_line("loading CR3 with a page directory beyond RAM");
        __asm__ volatile("mov %0, %%cr3" : : "r"(0x7fff0000u) : "memory");
        hk_line("still running after CR3 beyond RAM");
    }
    hk_done();
}
