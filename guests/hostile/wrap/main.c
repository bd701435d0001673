/* wrap: make EIP wrap from 0xFFFFFFFF to 0.
 *
 * In protected mode with a 4 GiB code segment, instruction fetch and EIP
 * wrap modulo 2^32: code at the last bytes of linear space runs on at
 * linear 0, and an instruction may straddle the wrap (SDM Vol. 3A §5.3: the
 * limit check is on the offset; the linear address is computed modulo 2^32).
 * The kernel maps the top page of linear space and the page at linear 0 to
 * frames of its own, writes code across the boundary and calls it:
 *
 *   0xFFFFFFF8: NOP x 6; MOV EAX, imm32 -- its first two bytes at 0xFFFFFFFE,
 *   0x00000000: the rest of the immediate, INC EAX, RET.
 *
 * Under trap-and-emulate the top 4 MiB of linear space hold the monitor's
 * window, so the guest's code there must run on the virtual CPU from the
 * guest's own frames, and the wrap must bring it back.  Earlier, the
 * monitor looped for ever there, past any limit.
 */
#include "hk.h"

static u32 pt_top[1024] __attribute__((aligned(4096)));
static volatile u8 top_frame[4096] __attribute__((aligned(4096)));
static volatile u8 low_frame[4096] __attribute__((aligned(4096)));
static volatile u32 result;

static void call_top(u32 entry)
{
    u32 v;
    __asm__ volatile("xorl %%eax, %%eax\n\tcall *%1" : "=&a"(v) : "c"(entry) : "memory", "cc");
    result = v;
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("wrap", magic, mbi);
    hk_paging_on();
    u32 saved_pte0 = hk_pt0[0];
    pt_top[1023] = (u32)top_frame | PG_P | PG_W;
    hk_pd[1023] = (u32)pt_top | PG_P | PG_W;
    hk_pt0[0] = (u32)low_frame | PG_P | PG_W;
    hk_invlpg(0);
    hk_invlpg(0xfffff000u);

    u32 at = 0xff8;
    for (int i = 0; i < 6; i++)
        top_frame[at++] = 0x90;                 /* NOP */
    top_frame[at++] = 0xb8;                     /* MOV EAX, 0x44332211 ... */
    top_frame[at++] = 0x11;
    low_frame[0] = 0x22;                        /* ... the immediate runs on at 0 */
    low_frame[1] = 0x33;
    low_frame[2] = 0x44;
    low_frame[3] = 0x40;                        /* INC EAX */
    low_frame[4] = 0xc3;                        /* RET */

    result = 0;
    int v = hk_try(call_top, 0xfffffff8u);
    hk_prefix();
    puts("call 0xfffffff8, across the wrap: ");
    if (v >= 0)
        hk_put_fault(v);
    else {
        puts("eax=");
        puthex(result, 8);
    }
    putc('\n');

    /* The same code entered exactly at the wrap: only the low half runs. */
    low_frame[0] = 0x40;                        /* INC EAX */
    low_frame[1] = 0xc3;                        /* RET */
    top_frame[0xfff] = 0x40;                    /* INC EAX at 0xFFFFFFFF */
    result = 0;
    v = hk_try(call_top, 0xffffffffu);
    hk_prefix();
    puts("call 0xffffffff, one byte before the wrap: ");
    if (v >= 0)
        hk_put_fault(v);
    else {
        puts("eax=");
        puthex(result, 8);
    }
    putc('\n');

    hk_pt0[0] = saved_pte0;
    hk_pd[1023] = 0;
    hk_invlpg(0);
    hk_invlpg(0xfffff000u);
    hk_line("done");
    tk_exit(0);
}
