/* init.c: the first (and driving) user process.  It runs the workload the
 * kernel command line named and prints its result line; its exit status
 * ends the run. */
#include "ulib.h"

static const struct { const char *name; u32 (*run)(u32); } table[] = {
    { "compute", w_compute },
    { "syscall", w_syscall },
    { "ctxswitch", w_ctxswitch },
    { "pgfault", w_pgfault },
    { "ptemod", w_ptemod },
    { "forkwait", w_forkwait },
    { "divzero", w_divzero },
    { "mixed", w_mixed },
    { "protect", w_protect },
};

int main(const char *workload, u32 iterations)
{
    for (u32 i = 0; i < ARRAY_SIZE(table); i++) {
        if (strcmp(table[i].name, workload) == 0) {
            u32 sum = table[i].run(iterations);
            printf("result %s iterations=%u checksum=0x%08x\n", workload, iterations, sum);
            return 0;
        }
    }
    fail("init: no user workload named '%s'", workload);
}
