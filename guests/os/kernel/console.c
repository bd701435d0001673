/* console.c: the serial console, a 16550 UART on COM1 driven by polling.
 *
 * Polling keeps the output order trivially deterministic: a line is on the
 * wire before the write that produced it returns. */
#include "kernel.h"
#include "cpuops.h"
#include <stdarg.h>

#define COM1 0x3f8
#define UART_THR 0   /* transmit holding register */
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_THRE 0x20

#ifdef TVOS_PV
/* Paravirtual: the console is a ring shared with the hypervisor's backend
 * (cpuops_xen.c), written a line at a time. */
void console_init(void) {}
void console_putc(char c) { cpu_console_write(&c, 1); }
void console_write(const char *s, u32 len) { cpu_console_write(s, len); }
#else
void console_init(void)
{
    cpu_outb(COM1 + UART_IER, 0x00);   /* no UART interrupts */
    cpu_outb(COM1 + UART_LCR, 0x80);   /* DLAB: program the divisor */
    cpu_outb(COM1 + 0, 0x01);          /* 115200 baud */
    cpu_outb(COM1 + 1, 0x00);
    cpu_outb(COM1 + UART_LCR, 0x03);   /* 8N1 */
    cpu_outb(COM1 + UART_FCR, 0xc7);   /* FIFOs on and cleared */
    cpu_outb(COM1 + UART_MCR, 0x03);   /* DTR, RTS */
}

void console_putc(char c)
{
    /* The UART has no notion of newlines; a terminal wants CR LF, but the
     * output is compared byte for byte, so we send LF only. */
    while (!(cpu_inb(COM1 + UART_LSR) & LSR_THRE))
        ;
    cpu_outb(COM1 + UART_THR, (u8)c);
}

void console_write(const char *s, u32 len)
{
    for (u32 i = 0; i < len; i++)
        console_putc(s[i]);
}
#endif

void kprintf(const char *f, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, f);
    int n = vfmt(buf, sizeof buf, f, ap);
    va_end(ap);
    console_write(buf, n < (int)sizeof buf ? (u32)n : sizeof buf - 1);
}
