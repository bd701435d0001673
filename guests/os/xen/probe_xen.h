/* probe_xen.h: the sensitivity probe's observations under the paravirtual
 * interface (included by kernel/probe.c when TVOS_PV).
 *
 * A paravirtual kernel does not execute SGDT, SIDT, SLDT, STR, SMSW,
 * PUSHF/POPF on IF and IOPL, LAR, LSL, VERR or VERW to learn its machine's
 * state: at ring 1 they would show the hypervisor's (its GDT, ring-1
 * descriptors truncated below the hole, the real IF).  It asks the layer
 * that set that state instead: the tables and registers it loaded through
 * cpuops (cpu_virtual), the event mask for IF, its own descriptors.  The
 * selectors it reads with PUSH/MOV/far transfers carry ring 1, which the
 * interface defines as the guest's kernel ring: VSEL reports them in the
 * virtual machine's terms, ring 1 as 0. */
#ifndef TVOS_PROBE_XEN_H
#define TVOS_PROBE_XEN_H

#define SGDT(d) ((d).base = cpu_virtual.gdt_base, (d).limit = cpu_virtual.gdt_limit)
#define SIDT(d) ((d).base = cpu_virtual.idt_base, (d).limit = cpu_virtual.idt_limit)
#define SLDT(s) ((s) = cpu_virtual.ldtr)
#define STR(s) ((s) = cpu_virtual.tr)
#define SMSW(s) ((s) = (u16)cpu_read_cr0())
#define PUSHF(v) ((v) = cpu_read_flags())
#define POPF_PUSHF(v, f) (cpu_irq_restore(f), (v) = cpu_read_flags())

static inline u32 VSEL(u32 s) { return (s & 3) == KERNEL_RPL ? s & ~3u : s; }

/* The kernel's own descriptor for a selector (through the GDT it loaded),
 * 0 if the selector is null or outside it. */
static int vdesc(u32 sel, u32 *lo, u32 *hi)
{
    u32 index = sel & ~7u;
    if (index == 0 || (sel & 4) || index + 7 > cpu_virtual.gdt_limit)
        return 0;
    const struct segdesc *d = (const struct segdesc *)(cpu_virtual.gdt_base + index);
    *lo = d->lo;
    *hi = d->hi;
    return 1;
}

/* SDM Vol. 2 (LAR, LSL, VERR, VERW), at the virtual machine's CPL 0. */
static int vpriv_ok(u32 sel, u32 hi)
{
    u32 dpl = (hi >> 13) & 3, rpl = VSEL(sel) & 3;
    int conforming_code = (hi & 0x1800) == 0x1800 && (hi & 0x400);
    return conforming_code || dpl >= rpl;      /* DPL >= max(CPL 0, RPL) */
}

static u32 lar(u32 sel, int *ok)
{
    u32 lo, hi;
    *ok = 0;
    if (!vdesc(sel, &lo, &hi))
        return 0;
    u32 type = (hi >> 8) & 0xf;
    int system = !(hi & 0x1000);
    if (system && !(type == 1 || type == 2 || type == 3 || type == 4 || type == 5 ||
                    type == 9 || type == 0xb || type == 0xc))
        return 0;
    if (!vpriv_ok(sel, hi))
        return 0;
    *ok = 1;
    return hi & 0x00f0ff00;
}

static u32 lsl(u32 sel, int *ok)
{
    u32 lo, hi;
    *ok = 0;
    if (!vdesc(sel, &lo, &hi))
        return 0;
    u32 type = (hi >> 8) & 0xf;
    if (!(hi & 0x1000) && !(type == 1 || type == 2 || type == 3 || type == 9 || type == 0xb))
        return 0;
    if (!vpriv_ok(sel, hi))
        return 0;
    u32 limit = (lo & 0xffff) | (hi & 0xf0000);
    if (hi & (1u << 23))
        limit = limit << 12 | 0xfff;
    *ok = 1;
    return limit;
}

static int verr(u16 sel)
{
    u32 lo, hi;
    if (!vdesc(sel, &lo, &hi) || !(hi & 0x1000) || !vpriv_ok(sel, hi))
        return 0;
    return !(hi & 0x800) || (hi & 0x200);      /* data, or readable code */
}

static int verw(u16 sel)
{
    u32 lo, hi;
    if (!vdesc(sel, &lo, &hi) || !(hi & 0x1000) || !vpriv_ok(sel, hi))
        return 0;
    return !(hi & 0x800) && (hi & 0x200);      /* writable data */
}

#endif
