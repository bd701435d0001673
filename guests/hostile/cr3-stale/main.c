/* cr3-stale: change the page tables of address spaces that are not running.
 *
 * A monitor that keeps shadow page tables across CR3 loads (one shadow per
 * guest page directory, as trapvisor's trap-and-emulate does) must notice
 * every change the guest makes to any of its tables, including the tables of
 * an address space that is not current when the change is made.  On a real
 * machine a CR3 load flushes the TLB, so after switching back the new
 * translation is all there is.  This kernel builds NSPACES address spaces
 * (each: the kernel's identity-mapped first 4 MiB, plus one page table of its
 * own for 0x400000-0x7fffff), and from a different space:
 *
 *   1. remaps space k's page at WIN to another frame (a PTE store), having
 *      first written that page table through the identity map while no
 *      space used it as a page table (so a writable mapping of it exists);
 *   2. swaps space k's page table for another one (a PDE store);
 *   3. makes space k's page read-only, then writes it (#PF expected);
 *   4. clears the accessed and dirty bits and checks that reading and
 *      writing in space k sets them again.
 *
 * Each read must see the frame the tables name now.  Rounds go over 4
 * spaces (a monitor's cache holds them all) and over 12 (more than it holds:
 * shadows are evicted and rebuilt).  Any stale translation prints FAILED.
 */
#include "hk.h"

#define WIN 0x400000u
#define NSPACES 12
#define NFRAMES 16

/* volatile: the CPU writes accessed/dirty bits into these behind the compiler's back */
static volatile u32 pd[NSPACES][1024] __attribute__((aligned(4096)));
static volatile u32 pt[NSPACES][1024] __attribute__((aligned(4096)));
static volatile u32 pt_spare[1024] __attribute__((aligned(4096)));
static volatile u32 frame[NFRAMES][1024] __attribute__((aligned(4096)));
static u32 bad;

static void load_cr3(volatile u32 *dir) { __asm__ volatile("mov %0, %%cr3" : : "r"(dir) : "memory"); }
static void wr(u32 addr) { hk_write32(addr, 0xdead0000u | addr >> 12); }

static void expect(const char *what, u32 k, u32 got, u32 want)
{
    if (got == want)
        return;
    bad++;
    hk_prefix();
    puts(what);
    puts(" in space ");
    putdec(k);
    puts(": reads ");
    puthex(got, 8);
    puts(", tables say ");
    puthex(want, 8);
    puts(" FAILED\n");
}

/* Space k maps WIN to frame f (its own page table, entry 0). */
static void point(u32 k, u32 f) { pt[k][0] = (u32)frame[f] | PG_P | PG_W; }

static void remap_rounds(u32 n, u32 rounds)
{
    for (u32 r = 0; r < rounds; r++) {
        /* From hk_pd (no space's tables in use), point every space somewhere new. */
        load_cr3(hk_pd);
        for (u32 k = 0; k < n; k++)
            point(k, (k + r) % NFRAMES);
        for (u32 k = 0; k < n; k++) {
            load_cr3(pd[k]);
            expect("remapped page", k, hk_read32(WIN), frame[(k + r) % NFRAMES][0]);
        }
        /* From space k, change the next space's mapping: a store into the
         * page table of a space that is not current. */
        for (u32 k = 0; k < n; k++) {
            load_cr3(pd[k]);
            u32 next = (k + 1) % n;
            point(next, (next + r + 1) % NFRAMES);
        }
        for (u32 k = 0; k < n; k++) {
            load_cr3(pd[k]);
            expect("page remapped from another space", k, hk_read32(WIN), frame[(k + r + 1) % NFRAMES][0]);
        }
    }
    hk_prefix();
    putdec(n);
    puts(" address spaces, ");
    putdec(rounds);
    puts(" rounds of PTE changes made from other spaces: done\n");
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("cr3-stale", magic, mbi);
    for (u32 f = 0; f < NFRAMES; f++)
        frame[f][0] = 0xf0000000u | f;
    for (u32 k = 0; k < NSPACES; k++)
        for (u32 i = 0; i < 1024; i++)
            pt[k][i] = 0;
    hk_paging_on();
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x10000u));   /* CR0.WP: ring 0 honours R/W */
    for (u32 k = 0; k < NSPACES; k++) {
        pd[k][0] = (u32)hk_pt0 | PG_P | PG_W;
        pd[k][1] = (u32)pt[k] | PG_P | PG_W;
        point(k, k);
    }

    /* 1. Page table 0 written as plain data (writable mapping), then used. */
    pt[0][5] = 0;
    load_cr3(pd[0]);
    expect("first read", 0, hk_read32(WIN), frame[0][0]);
    load_cr3(pd[1]);
    pt[0][0] = (u32)frame[7] | PG_P | PG_W;
    load_cr3(pd[0]);
    expect("page remapped from space 1", 0, hk_read32(WIN), frame[7][0]);

    /* 2. A PDE store into space 0's directory while space 1 runs. */
    pt_spare[0] = (u32)frame[9] | PG_P | PG_W;
    load_cr3(pd[1]);
    pd[0][1] = (u32)pt_spare | PG_P | PG_W;
    load_cr3(pd[0]);
    expect("page table swapped from space 1", 0, hk_read32(WIN), frame[9][0]);
    pd[0][1] = (u32)pt[0] | PG_P | PG_W;          /* a PDE store in the current space, */
    hk_invlpg(WIN);                                /* which the TLB may keep without this */
    expect("page table swapped back", 0, hk_read32(WIN), frame[7][0]);
    hk_line("PTE and PDE stores into a space that is not running are seen after the switch");

    /* 3. Write access taken away while space 2 runs. */
    load_cr3(pd[0]);
    wr(WIN);                                       /* writable and dirty in space 0 */
    load_cr3(pd[2]);
    pt[0][0] = (u32)frame[7] | PG_P;
    load_cr3(pd[0]);
    int v = hk_try(wr, WIN);
    hk_prefix();
    puts("write after the page was made read-only from space 2: ");
    hk_put_fault(v);
    puts(v == 14 ? "\n" : " FAILED\n");

    /* 4. Accessed and dirty bits cleared while space 2 runs. */
    load_cr3(pd[2]);
    pt[0][0] = (u32)frame[7] | PG_P | PG_W;
    load_cr3(pd[0]);
    (void)hk_read32(WIN);
    u32 after_read = pt[0][0] & 0x60;
    wr(WIN);
    u32 after_write = pt[0][0] & 0x60;
    hk_prefix();
    puts("A/D bits cleared from space 2: after a read ");
    puthex(after_read, 2);
    puts(", after a write ");
    puthex(after_write, 2);
    puts(after_read == 0x20 && after_write == 0x60 ? "\n" : " FAILED\n");
    point(0, 0);

    /* Many switches: within and beyond what a shadow cache holds. */
    remap_rounds(4, cmdline_uint(mbi, "rounds", 3));
    remap_rounds(NSPACES, cmdline_uint(mbi, "rounds", 3));

    load_cr3(hk_pd);
    hk_prefix();
    puts(bad ? "stale translations FAILED\n" : "every read saw the tables as they are now\n");
    hk_done();
}
