/* cli-hlt: CLI; HLT.  With IF=0 only NMI, SMI, INIT or reset wake the CPU:
 * a real machine is halted for good.  A VMM stops the VM and says why. */
#include "hk.h"

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("cli-hlt", magic, mbi);
    hk_pic_remap(0xfe, 0xff);
    hk_pit(11932);
    hk_line("cli; hlt (timer at 100 Hz, irq 0 unmasked)");
    __asm__ volatile("cli\n1:\thlt\n\tjmp 1b");
}
