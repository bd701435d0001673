/* fault-loop: make the processor work without retiring instructions.
 *
 * mode=0: the #UD gate leads to a UD2, so each delivery raises #UD again at
 *         the handler's first instruction, on a 16-bit stack segment whose
 *         SP wraps inside its own 64 KiB: an endless chain of deliveries that
 *         retires no instruction and overwrites nothing else;
 * mode=1: the #GP gate leads to an instruction that loads a null selector
 *         into SS, which faults with #GP again;
 * mode=2: a jump into zero-filled memory at ring 0: "add [eax], al" over and
 *         over, until the end of RAM.
 * On a real machine the first two never end and the third runs off the end
 * of memory.  A VMM must stop the VM at its instruction or time limit, fast,
 * and carry on.
 */
#include "hk.h"

extern void fl_ud_loop(void), fl_gp_loop(void);
__asm__(".globl fl_ud_loop\nfl_ud_loop:\n\tud2\n"
        ".globl fl_gp_loop\nfl_gp_loop:\n\txorl %eax, %eax\n\tmovl %eax, %ss\n\tjmp fl_gp_loop\n");

static u8 zeros[65536] __attribute__((aligned(4096)));
static u8 stack16[65536] __attribute__((aligned(4096)));

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("fault-loop", magic, mbi);
    u32 mode = cmdline_uint(mbi, "mode", 0);
    if (mode == 0) {
        hk_line("#UD gate -> ud2, then ud2, on a 16-bit stack");
        set_gate(&hk_idt[6], fl_ud_loop, KCODE, 0x8e);
        /* data, read/write, DPL 0, present; byte granular, B=0: SP wraps at 64 KiB */
        hk_gdt[HK_SPARE] = SEG((u32)stack16, 0xffff, 0x92, 0x0);
        __asm__ volatile("movw %0, %%ss\n\tmovl $0x8000, %%esp\n\tud2"
                         : : "r"((u16)(HK_SPARE * 8)) : "memory");
    } else if (mode == 1) {
        hk_line("#GP gate -> mov ss, null, then mov ss, null");
        set_gate(&hk_idt[13], fl_gp_loop, KCODE, 0x8e);
        fl_gp_loop();
    } else {
        hk_line("jump into zero-filled memory");
        __asm__ volatile("movl %0, %%eax\n\tjmp *%%eax" : : "r"((u32)zeros) : "eax");
    }
    hk_line("still running");
    tk_exit(1);
}
