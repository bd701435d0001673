/* main.c: boot.  Bring the machine up in a fixed order, then either run a
 * kernel workload to completion or start the init process and the
 * scheduler. */
#include "kernel.h"
#include "cpuops.h"

#define MB_BOOT_MAGIC 0x2BADB002
#define MB_INFO_MEM     (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)
/* Use (and identity-map) at most 64 MiB: far more than the workloads need,
 * and building the map costs instructions on slow simulated CPUs. */
#define KERNEL_MAP_MAX  (64u << 20)

struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };

extern u8 kernel_end[];
static char cmdline_copy[256];

static void usage_error(const char *msg)
{
    /* One line: the problem, then what would have been accepted. */
    kprintf("tvos: bad command line: %s (usage: workload=NAME iterations=N; workloads:", msg);
    for (int i = 0; i < nworkloads; i++)
        kprintf(" %s", workloads[i].name);
    kprintf(")\n");
    machine_exit(EXIT_USAGE);
}

void kmain(u32 magic, struct mb_info *mbi)
{
    console_init();
    if (magic != MB_BOOT_MAGIC)
        panic("not started by a Multiboot loader (magic 0x%08x)", magic);

    /* Copy what we need out of the boot information before anything can
     * overwrite it. */
    if (mbi->flags & MB_INFO_CMDLINE) {
        const char *s = (const char *)mbi->cmdline;
        u32 n = 0;
        while (s[n] && n < sizeof cmdline_copy - 1)
            n++;
        memcpy(cmdline_copy, s, n);
    }
    if (!(mbi->flags & MB_INFO_MEM))
        panic("the boot loader gave no memory size");
    u32 top = (1u << 20) + mbi->mem_upper * 1024u;
    if (top > KERNEL_MAP_MAX)
        top = KERNEL_MAP_MAX;
    if (top < (u32)kernel_end + (4u << 20))
        panic("need at least 4 MiB of memory above the kernel");

    gdt_init();
    trap_init();

    struct cmdline cl;
    if (cmdline_parse(cmdline_copy, &cl) < 0)
        usage_error(cl.error);
    const struct workload *wl = workload_find(cl.workload);
    if (!wl) {
        char msg[80];
        fmt(msg, sizeof msg, "unknown workload '%s'", cl.workload);
        usage_error(msg);
    }
    u32 iterations = cl.iterations_given ? cl.iterations : wl->default_iterations;
    kprintf("tvos: workload=%s iterations=%u\n", wl->name, iterations);

#ifdef TVOS_PV
    kalloc_init(cpu_boot_free_start(), top);   /* after the hypervisor's boot area */
#else
    kalloc_init((u32)kernel_end, top);
#endif
    vm_init(top);
    pic_init();
    pit_init();
    proc_init();

    if (wl->kind == WL_KERNEL) {
        cpu_irq_enable();
        u32 sum = wl->run(iterations);
        cpu_irq_disable();
        kprintf("result %s iterations=%u checksum=0x%08x\n", wl->name, iterations, sum);
        machine_exit(EXIT_OK);
    }
    proc_create_init(wl->name, iterations);
    scheduler();
}
