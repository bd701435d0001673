/* cli-forever: interrupts off, then loop forever.
 *
 * The PIT runs at 1 kHz and IRQ 0 is unmasked, but with IF=0 no interrupt
 * is ever taken: on a real machine nothing but NMI or reset gets the CPU
 * back.  A VMM keeps control anyway (the host's own timer, here its
 * instruction budget) and stops the VM at its limit.
 */
#include "hk.h"

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("cli-forever", magic, mbi);
    hk_pic_remap(0xfe, 0xff);
    hk_pit(1193);
    hk_line("cli; jmp . (timer at 1 kHz, irq 0 unmasked)");
    __asm__ volatile("cli\n1:\tjmp 1b");
}
