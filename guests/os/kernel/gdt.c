/* gdt.c: segmentation, reduced to what protected mode requires.
 *
 * All four code/data segments are flat (base 0, limit 4 GiB); paging does
 * the real protection.  Ring 3 needs its own code and data descriptors
 * (DPL 3), and a TSS tells the CPU which stack (SS0:ESP0) to switch to when
 * a trap or interrupt arrives from ring 3.  The GDT and TSS live in the
 * .cputables section at fixed addresses (see kernel.ld). */
#include "kernel.h"
#include "cpuops.h"

struct segdesc gdt[NSEGS] __attribute__((section(".cputables.gdt")));
struct tss ktss __attribute__((section(".cputables.tss")));

static struct segdesc seg(u32 base, u32 limit, u8 access, u8 flags)
{
    struct segdesc d;
    d.lo = (base << 16) | (limit & 0xffff);
    d.hi = (base & 0xff000000) | ((u32)flags << 20) | (limit & 0xf0000) |
           ((u32)access << 8) | ((base >> 16) & 0xff);
    return d;
}

void gdt_init(void)
{
    /* flags 0xc: 4 KiB granularity, 32-bit; limit 0xfffff pages = 4 GiB */
    gdt[0] = (struct segdesc){0, 0};
    gdt[SEG_KCODE] = seg(0, 0xfffff, ACC_KCODE, 0xc);
    gdt[SEG_KDATA] = seg(0, 0xfffff, ACC_KDATA, 0xc);
    gdt[SEG_UCODE] = seg(0, 0xfffff, ACC_UCODE, 0xc);
    gdt[SEG_UDATA] = seg(0, 0xfffff, ACC_UDATA, 0xc);
    gdt[SEG_TSS] = seg((u32)&ktss, sizeof ktss - 1, ACC_TSS, 0x0);

    memset(&ktss, 0, sizeof ktss);
    ktss.ss0 = KDATA_SEL;
    /* An I/O map base past the TSS limit means "no bitmap": ring 3 gets no
     * ports at all (IOPL is 0). */
    ktss.iomap_base = sizeof ktss;

    cpu_load_gdt(gdt, sizeof gdt - 1);
    cpu_load_ldt(0);      /* no LDT: SLDT reads back 0 */
    cpu_load_tr(TSS_SEL);
}
