/* panic.c: the two ways a run ends. */
#include "kernel.h"
#include "cpuops.h"
#include <stdarg.h>

#define DEBUG_EXIT_PORT 0xf4

/* Write the status to the debug-exit device (QEMU isa-debug-exit and the
 * trapvisor PC end the run there).  On a machine without one, halt. */
void machine_exit(u8 value)
{
    cpu_irq_disable();
#ifdef TVOS_PV
    cpu_shutdown(value);     /* SCHEDOP_shutdown */
#endif
    cpu_outb(DEBUG_EXIT_PORT, value);
    cpu_halt_forever();
}

void panic(const char *f, ...)
{
    char buf[200];
    va_list ap;
    cpu_irq_disable();
    va_start(ap, f);
    vfmt(buf, sizeof buf, f, ap);
    va_end(ap);
    kprintf("tvos: panic: %s\n", buf);
    machine_exit(EXIT_PANIC);
}
