/* ulib.c: console output for user programs. */
#include "ulib.h"
#include <stdarg.h>

void printf(const char *f, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, f);
    int n = vfmt(buf, sizeof buf, f, ap);
    va_end(ap);
    write(1, buf, n < (int)sizeof buf ? (u32)n : sizeof buf - 1);
}

/* A workload found something wrong: say so and exit non-zero, which
 * ends the run with a failure status. */
void fail(const char *f, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, f);
    int n = vfmt(buf, sizeof buf, f, ap);
    va_end(ap);
    write(1, "FAIL: ", 6);
    write(1, buf, (u32)n);
    write(1, "\n", 1);
    exit(1);
}
