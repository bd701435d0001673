/* pic-pit-starve: try to drown the host in timer interrupts.
 *
 * The 8254 counter 0 is programmed with divisor 2 (596 kHz, its fastest
 * useful rate in mode 2) and every 8259 line is unmasked.  Then, with
 * interrupts on, rounds of: random IMR values on both PICs, the odd full
 * re-initialisation (ICW1-4), spurious EOIs, the PIT reprogrammed with a
 * random small divisor, a read of counter 0.  On real hardware the CPU
 * spends most of its time in the timer handler but makes progress; under a
 * VMM the timer is the VM's own virtual device on the VM's virtual clock,
 * so the host is never interrupted at all -- the VM gets its slice and is
 * stopped by its limit if it does not finish.
 *
 * halt=1 (default): finally every line is masked, the PIT left running, and
 * the CPU halted with IF=1.  A real machine sleeps forever; the VMM must
 * not spin on the timer that can never wake the guest.
 */
#include "hk.h"

static u32 seed = 12345;

static u32 rnd(void)
{
    seed = seed * 1103515245u + 12345u;
    return seed >> 16;
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("pic-pit-starve", magic, mbi);
    u32 rounds = cmdline_uint(mbi, "rounds", 300);
    hk_pic_remap(0x00, 0x00);
    hk_pit(2);
    hk_line("pit at divisor 2, every pic line unmasked, sti");
    __asm__ volatile("sti");
    for (u32 r = 0; r < rounds; r++) {
        u32 x = rnd();
        outb(0x21, (u8)x);
        outb(0xa1, (u8)(x >> 8));
        if ((x & 0x1f) == 0)
            hk_pic_remap((u8)rnd(), (u8)rnd());
        if ((x & 0x7) == 1) {
            outb(0x20, 0x20);           /* spurious EOIs */
            outb(0xa0, 0x20);
        }
        if ((x & 0xf) == 2)
            hk_pit((u16)(2 + (rnd() & 0x3f)));
        outb(0x43, 0x00);               /* latch counter 0 */
        (void)inb(0x40);
        (void)inb(0x40);
        outb(0x21, 0x00);
        outb(0xa1, 0x00);
    }
    /* Still taking timer interrupts after the storm?  (Wait for one: how
     * many arrived during the rounds depends on the machine's speed.) */
    outb(0x21, 0xfe);
    outb(0xa1, 0xff);
    hk_pit(2);
    u32 before = hk_irqs[0];
    for (u32 spin = 0; spin < 10000000 && hk_irqs[0] == before; spin++)
        __asm__ volatile("pause");
    __asm__ volatile("cli");
    hk_prefix();
    puts("survived ");
    putdec(rounds);
    puts(" rounds; a timer interrupt after them: ");
    puts(hk_irqs[0] != before ? "yes" : "no");
    putc('\n');

    /* Timer interrupts taken with HLT (1 kHz): the guest still wakes. */
    hk_pit(1193);
    outb(0x21, 0xfe);
    outb(0xa1, 0xff);
    before = hk_irqs[0];
    for (int k = 0; k < 20; k++)
        __asm__ volatile("sti\n\thlt\n\tcli");
    hk_line(hk_irqs[0] - before >= 20 ? "20 halts, each woken by the timer" : "halts NOT woken");

    if (cmdline_uint(mbi, "halt", 1)) {
        hk_line("every pic line masked, pit at divisor 2, sti; hlt (a real machine sleeps forever)");
        hk_pit(2);
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        __asm__ volatile("sti\n\thlt");
        hk_line("woke up with every line masked");
        tk_exit(1);
    }
    hk_done();
}
