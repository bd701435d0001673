/* rep-storm: one instruction that runs (almost) forever.
 *
 * REP STOSB with ECX = count stores count bytes.  A real CPU takes
 * interrupts between iterations (the instruction is restartable), so a host
 * keeps control.  A monitor whose time slice counts instructions must count
 * the iterations too, or a single instruction escapes the slice: with the
 * default count (0xFFFFFFFF, from 2 MiB up across all of physical space,
 * beyond RAM included) it would run for hours.  Smaller counts (count=N)
 * finish and print "done".
 */
#include "hk.h"

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("rep-storm", magic, mbi);
    u32 n = cmdline_uint(mbi, "count", 0xffffffffu);
    u32 dst = 0x200000;
    hk_prefix();
    puts("rep stosb, ecx=");
    puthex(n, 8);
    putc('\n');
    __asm__ volatile("cld\n\trep stosb" : "+D"(dst), "+c"(n) : "a"(0) : "memory");
    hk_done();
}
