/* spin: busy-wait forever with interrupts on and never HLT.
 *
 * The guest takes its timer interrupts (10 kHz) and prints every 10th tick,
 * but never yields the processor.  On a real machine it runs forever; a
 * VMM must still get control back and stop the VM at its limit.
 */
#include "hk.h"

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("spin", magic, mbi);
    hk_pic_remap(0xfe, 0xff);
    hk_pit(119);
    hk_line("sti; spinning without hlt (timer at 10 kHz)");
    __asm__ volatile("sti");
    u32 shown = 0;
    for (;;) {
        u32 t = hk_irqs[0];
        if (t >= shown + 10) {
            shown = t - t % 10;
            hk_prefix();
            puts("tick ");
            putdec(shown);
            putc('\n');
        }
    }
}
