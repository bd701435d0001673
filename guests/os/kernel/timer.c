/* timer.c: the 8259 interrupt controllers and the 8254 interval timer,
 * the lowest common denominator of PC timers. */
#include "kernel.h"
#include "cpuops.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define PIT_CH0 0x40
#define PIT_MODE 0x43
#define PIT_HZ 1193182

#ifdef TVOS_PV
/* Paravirtual: no PIC, no PIT; the hypervisor's periodic VIRQ_TIMER event
 * arrives as IRQ 0 (cpuops_xen.c). */
void pic_init(void) {}
void pic_eoi(int irq) { (void)irq; }
void pit_init(void) { cpu_timer_start(TIMER_HZ); }
#else
void pic_init(void)
{
    /* ICW1: edge triggered, cascade, ICW4 follows.  ICW2: IRQ 0-7 on
     * vectors 32-39 and 8-15 on 40-47 (away from the CPU's exceptions).
     * ICW3: slave on IRQ 2.  ICW4: 8086 mode, normal EOI. */
    cpu_outb(PIC1_CMD, 0x11);
    cpu_outb(PIC2_CMD, 0x11);
    cpu_outb(PIC1_DATA, T_IRQ0);
    cpu_outb(PIC2_DATA, T_IRQ0 + 8);
    cpu_outb(PIC1_DATA, 0x04);
    cpu_outb(PIC2_DATA, 0x02);
    cpu_outb(PIC1_DATA, 0x01);
    cpu_outb(PIC2_DATA, 0x01);
    /* Only the timer: the console is polled. */
    cpu_outb(PIC1_DATA, 0xfe);
    cpu_outb(PIC2_DATA, 0xff);
}

void pic_eoi(int irq)
{
    if (irq >= 8)
        cpu_outb(PIC2_CMD, 0x20);
    cpu_outb(PIC1_CMD, 0x20);
}

void pit_init(void)
{
    u32 divisor = (PIT_HZ + TIMER_HZ / 2) / TIMER_HZ;   /* 11932 */
    cpu_outb(PIT_MODE, 0x34);   /* channel 0, lobyte/hibyte, mode 2 */
    cpu_outb(PIT_CH0, (u8)divisor);
    cpu_outb(PIT_CH0, (u8)(divisor >> 8));
}
#endif
