/* workloads.c: the workloads the command line can choose.  Kernel
 * workloads run inside kmain; user workloads run in the init program,
 * which gets the name and iteration count as main's arguments. */
#include "kernel.h"

const struct workload workloads[] = {
    { "mixed",     WL_USER,   8,      NULL },
    { "compute",   WL_USER,   64,     NULL },
    { "syscall",   WL_USER,   100000, NULL },
    { "ctxswitch", WL_USER,   10000,  NULL },
    { "pgfault",   WL_USER,   5000,   NULL },
    { "ptemod",    WL_USER,   10000,  NULL },
    { "forkwait",  WL_USER,   1000,   NULL },
    { "divzero",   WL_USER,   10000,  NULL },
    { "io",        WL_KERNEL, 10000,  kwork_io },
    { "crwrite",   WL_KERNEL, 10000,  kwork_crwrite },
    { "probe",     WL_KERNEL, 1,      probe_run },
    { "selftest",  WL_KERNEL, 1,      selftest_run },
    { "protect",   WL_USER,   1,      NULL },
    { "panic",     WL_KERNEL, 1,      kwork_panic },
    { "balloon",   WL_KERNEL, 20,     kwork_balloon },
};
const int nworkloads = ARRAY_SIZE(workloads);

const struct workload *workload_find(const char *name)
{
    for (int i = 0; i < nworkloads; i++)
        if (strcmp(workloads[i].name, name) == 0)
            return &workloads[i];
    return NULL;
}
