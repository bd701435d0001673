/* pt-exhaust: make the monitor build as many shadow page tables as possible.
 *
 * Shadow page tables live in a fixed pool of the monitor's own memory.  This
 * kernel points all 1023 page-directory slots below the top one at the same
 * page table (which maps the kernel's frames), so 4 GiB of linear space is
 * backed by a few KiB of guest memory, and then touches one word in every
 * 4 MiB -- reading and writing, several rounds, each round with a different
 * page table entry.  On a real machine that is just a lot of aliases; a
 * monitor must keep up without running out of memory or failing, and every
 * alias must keep reading the kernel's own frame.
 */
#include "hk.h"

static u32 pt_alias[1024] __attribute__((aligned(4096)));
static volatile u32 target[1024] __attribute__((aligned(4096)));

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("pt-exhaust", magic, mbi);
    u32 rounds = cmdline_uint(mbi, "rounds", 2);
    /* pt_alias: entry k maps the kernel's own frame k (identity, first 4 MiB),
     * except entries 0x3f0-0x3ff, which all map `target`. */
    for (u32 k = 0; k < 1024; k++)
        pt_alias[k] = (k << 12) | PG_P | PG_W;
    for (u32 k = 0x3f0; k < 0x400; k++)
        pt_alias[k] = (u32)target | PG_P | PG_W;
    for (u32 j = 0; j < 1023; j++)
        hk_pd[j] = (u32)pt_alias | PG_P | PG_W;
    hk_paging_on();
    hk_pd[0] = (u32)pt_alias | PG_P | PG_W;       /* hk_paging_on set it to hk_pt0 */
    __asm__ volatile("mov %0, %%cr3" : : "r"(hk_pd) : "memory");
    hk_line("1023 page-directory slots alias one page table");

    u32 bad = 0;
    for (u32 r = 0; r < rounds; r++) {
        u32 slot = 0x3f0 + r % 16;
        for (u32 j = 1; j < 1023; j++) {
            volatile u32 *p = (volatile u32 *)((j << 22) | (slot << 12));
            *p = j ^ r;
            if (target[0] != (j ^ r) || *p != (j ^ r))
                bad++;
        }
    }
    hk_prefix();
    puts("touched every 4 MiB of linear space ");
    putdec(rounds);
    puts(bad ? " times: aliases FAILED\n" : " times: every alias reads the kernel's own frame\n");
    hk_done();
}
