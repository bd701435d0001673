/* cpuops_xen.c: the CPU-ops layer for the pv technique's Xen-style
 * hypervisor (trapvisor/vmm/techniques/pv; docs/paravirt.md).  Each
 * operation that natively is a privileged instruction is a hypercall, or
 * a write to the shared_info page: the interrupt flag is the event mask,
 * page-table entries are validated mmu_update requests holding machine
 * frames, descriptor tables are registered with set_gdt/set_trap_table,
 * the kernel stack is set with stack_switch, CR0/CR3/CR4 are kept here as
 * the values the kernel set.  The hypercall ABI is Xen x86-32's: a call
 * into the hypercall page, EAX = number, EBX ECX EDX ESI EDI = arguments. */
#include "cpuops.h"
#include "kernel.h"

/* ---- the ABI (xen.h and friends), the part this kernel uses ---- */
#define __HYPERVISOR_set_trap_table    0
#define __HYPERVISOR_mmu_update        1
#define __HYPERVISOR_set_gdt           2
#define __HYPERVISOR_stack_switch      3
#define __HYPERVISOR_set_callbacks     4
#define __HYPERVISOR_fpu_taskswitch    5
#define __HYPERVISOR_update_va_mapping 14
#define __HYPERVISOR_xen_version       17
#define __HYPERVISOR_vcpu_op           24
#define __HYPERVISOR_mmuext_op         26
#define __HYPERVISOR_sched_op          29
#define __HYPERVISOR_event_channel_op  32
#define __HYPERVISOR_physdev_op        33
#define MMUEXT_PIN_L2_TABLE  1
#define MMUEXT_UNPIN_TABLE   4
#define MMUEXT_NEW_BASEPTR   5
#define MMUEXT_INVLPG_LOCAL  7
#define MMUEXT_SET_LDT      13
#define UVMF_INVLPG          2
#define DOMID_SELF      0x7ff0
#define SCHEDOP_block        1
#define SCHEDOP_shutdown     2
#define SHUTDOWN_poweroff    0
#define SHUTDOWN_crash       3
#define EVTCHNOP_bind_virq   1
#define EVTCHNOP_send        4
#define VIRQ_TIMER           0
#define VCPUOP_set_periodic_timer 10
#define PHYSDEVOP_set_iopl   6

struct start_info {
    char magic[32];
    u32 nr_pages, shared_info, flags, store_mfn, store_evtchn;
    u32 console_mfn, console_evtchn;
    u32 pt_base, nr_pt_frames, mfn_list, mod_start, mod_len;
    char cmd_line[1024];
};
struct vcpu_info {
    u8 evtchn_upcall_pending, evtchn_upcall_mask, pad[2];
    u32 evtchn_pending_sel;
    u32 cr2, arch_pad[5];
    u32 time[8];
};
struct shared_info {
    struct vcpu_info vcpu_info[32];
    u32 evtchn_pending[32];
    u32 evtchn_mask[32];
};
struct xencons_interface {
    char in[1024], out[2048];
    u32 in_cons, in_prod, out_cons, out_prod;
};
struct mmu_update { u32 ptr_lo, ptr_hi, val_lo, val_hi; };
struct mmuext_op { u32 cmd, arg1, arg2; };
struct trap_info { u8 vector, flags; u16 cs; u32 address; };

#define MACH_TO_PHYS ((const u32 *)0xfc000000u)

extern char hypercall_page[];
extern void xen_event_entry(void), xen_failsafe_entry(void);
void kmain(u32 magic, void *mbi);

static long hypercall(u32 nr, u32 a1, u32 a2, u32 a3, u32 a4, u32 a5)
{
    long r;
    __asm__ volatile("call *%[fn]"
                     : "=a"(r), "+b"(a1), "+c"(a2), "+d"(a3), "+S"(a4), "+D"(a5)
                     : [fn] "m"(*(void **)&(void *){hypercall_page + nr * 32})
                     : "memory");
    return r;
}

static struct start_info *xen_start_info;
static volatile struct shared_info *shared;
static volatile struct xencons_interface *cons;
static u32 cons_port, timer_port;
static const u32 *p2m;
static u32 cur_cr3, vcr0 = CR0_PE | CR0_ET, vcr4;
static u32 viopl, hyp_iopl;       /* the kernel's IOPL; the one it holds from the hypervisor */
struct cpu_virtual_state cpu_virtual;
static u8 shared_page[PGSIZE] __attribute__((aligned(PGSIZE)));
static struct segdesc gdt_page[PGSIZE / 8] __attribute__((aligned(PGSIZE)));
static struct trap_info trap_table[257];

static u32 pa_to_ma(u32 pa) { return p2m[pa >> PGSHIFT] << PGSHIFT | (pa & (PGSIZE - 1)); }
static u32 ma_to_pa(u32 ma) { return MACH_TO_PHYS[ma >> PGSHIFT] << PGSHIFT | (ma & (PGSIZE - 1)); }

static void check(long rc, const char *what)
{
    if (rc < 0)
        panic("hypercall %s refused: error %d", what, (int)-rc);
}

static void update_va(u32 va, u32 pte)
{
    check(hypercall(__HYPERVISOR_update_va_mapping, va, pte, UVMF_INVLPG, 0, 0), "update_va_mapping");
}

static void mmuext(u32 cmd, u32 arg1, u32 arg2)
{
    struct mmuext_op op = { cmd, arg1, arg2 };
    check(hypercall(__HYPERVISOR_mmuext_op, (u32)&op, 1, 0, DOMID_SELF, 0), "mmuext_op");
}

/* The kernel's IOPL v: a ring-0 kernel does I/O whatever its IOPL; a ring-1
 * kernel needs IOPL 1 at least, so the hypervisor is asked for max(v, 1). */
static void set_iopl(u32 v)
{
    u32 want = v < 1 ? 1 : v;
    viopl = v;
    if (want != hyp_iopl) {
        check(hypercall(__HYPERVISOR_physdev_op, PHYSDEVOP_set_iopl, (u32)&want, 0, 0, 0), "set_iopl");
        hyp_iopl = want;
    }
}

/* ---- boot: connect to the hypervisor, then start as from Multiboot ---- */
struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline; };
static struct mb_info mbi;

void xen_start(struct start_info *si)
{
    xen_start_info = si;
    p2m = (const u32 *)si->mfn_list;
    cur_cr3 = si->pt_base;
    /* shared_info: a hypervisor page, mapped over a page of our own. */
    update_va((u32)shared_page, si->shared_info | PG_P | PG_W);
    shared = (volatile struct shared_info *)shared_page;
    cons = (volatile struct xencons_interface *)ma_to_pa(si->console_mfn << PGSHIFT);
    cons_port = si->console_evtchn;
    check(hypercall(__HYPERVISOR_set_callbacks, KCODE_SEL, (u32)xen_event_entry,
                    KCODE_SEL, (u32)xen_failsafe_entry, 0), "set_callbacks");
    /* Port I/O for the io workload's CMOS and POST ports: the I/O privilege a
     * kernel has at CPL 0, which at ring 1 takes IOPL 1 (physdev.h). */
    set_iopl(0);
    mbi.flags = 1u << 0 | 1u << 2;
    mbi.mem_lower = 640;
    mbi.mem_upper = (si->nr_pages * (PGSIZE / 1024)) - 1024;
    mbi.cmdline = (u32)si->cmd_line;
    kmain(0x2BADB002, &mbi);
}

pde_t *cpu_boot_pgdir(void) { return (pde_t *)xen_start_info->pt_base; }

u32 cpu_boot_free_start(void)
{
    return xen_start_info->pt_base + (xen_start_info->nr_pt_frames + 1) * PGSIZE;
}

/* ---- events: the interrupt flag is the event mask ---- */
static inline volatile struct vcpu_info *vcpu(void) { return &shared->vcpu_info[0]; }
#define barrier() __asm__ volatile("" ::: "memory")

void cpu_irq_disable(void) { vcpu()->evtchn_upcall_mask = 1; barrier(); }

void cpu_irq_enable(void)
{
    vcpu()->evtchn_upcall_mask = 0;
    barrier();
    /* Something arrived while masked: any hypercall returns through the
     * hypervisor's event check (Linux's force_evtchn_callback). */
    if (vcpu()->evtchn_upcall_pending)
        hypercall(__HYPERVISOR_xen_version, 0, 0, 0, 0, 0);
}

u32 cpu_read_flags(void)
{
    u32 f;
    __asm__ volatile("pushfl; popl %0" : "=r"(f));
    f = (f & ~(FL_IF | FL_IOPL)) | viopl << 12;
    return vcpu()->evtchn_upcall_mask ? f : f | FL_IF;
}

u32 cpu_irq_save(void)
{
    u32 f = cpu_read_flags();
    cpu_irq_disable();
    return f;
}

void cpu_irq_restore(u32 flags)
{
    if (((flags & FL_IOPL) >> 12) != viopl)
        set_iopl((flags & FL_IOPL) >> 12);     /* POPF at CPL 0 sets IOPL too */
    if (flags & FL_IF)
        cpu_irq_enable();
    else
        cpu_irq_disable();
}

void cpu_wait_for_interrupt(void)
{
    /* SCHEDOP_block unmasks events and sleeps until one is pending; it is
     * delivered on the way back, then we mask again (as STI; HLT; CLI). */
    hypercall(__HYPERVISOR_sched_op, SCHEDOP_block, 0, 0, 0, 0);
    cpu_irq_disable();
}

void cpu_shutdown(u8 value)
{
    u32 arg[2] = { value ? SHUTDOWN_crash : SHUTDOWN_poweroff, value };
    for (;;)
        hypercall(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (u32)arg, 0, 0, 0);
}

void cpu_halt_forever(void) { cpu_shutdown(EXIT_PANIC); }

/* Which ports are pending: clear them and handle each (the timer as IRQ 0). */
void xen_event_dispatch(struct trapframe *tf)
{
    volatile struct vcpu_info *v = vcpu();
    v->evtchn_upcall_pending = 0;
    u32 sel = __atomic_exchange_n(&v->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
    while (sel) {
        u32 w = __builtin_ctz(sel);
        sel &= sel - 1;
        u32 bits = shared->evtchn_pending[w] & ~shared->evtchn_mask[w];
        __atomic_and_fetch(&shared->evtchn_pending[w], ~bits, __ATOMIC_SEQ_CST);
        while (bits) {
            u32 port = w * 32 + __builtin_ctz(bits);
            bits &= bits - 1;
            if (port == timer_port) {
                tf->trapno = T_IRQ0;
                trap(tf);
            }
        }
    }
}

void xen_failsafe(struct trapframe *tf)
{
    panic("failsafe callback: bad segment at eip 0x%08x", tf->eip);
}

void cpu_timer_start(u32 hz)
{
    u32 bind[3] = { VIRQ_TIMER, 0, 0 };
    check(hypercall(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_virq, (u32)bind, 0, 0, 0), "bind_virq");
    timer_port = bind[2];
    u32 period[2] = { 1000000000u / hz, 0 };     /* ns, as a 64-bit value */
    check(hypercall(__HYPERVISOR_vcpu_op, VCPUOP_set_periodic_timer, 0, (u32)period, 0, 0),
          "set_periodic_timer");
}

/* ---- console: the ring, then a notification ---- */
void cpu_console_write(const char *s, u32 len)
{
    while (len) {
        u32 prod = cons->out_prod;
        u32 room = sizeof cons->out - (prod - cons->out_cons);
        u32 n = len < room ? len : room;
        for (u32 i = 0; i < n; i++)
            cons->out[(prod + i) & (sizeof cons->out - 1)] = s[i];
        barrier();
        cons->out_prod = prod + n;
        s += n;
        len -= n;
        u32 port = cons_port;
        hypercall(__HYPERVISOR_event_channel_op, EVTCHNOP_send, (u32)&port, 0, 0, 0);
    }
}

/* ---- control registers: the values the kernel set ---- */
u32 cpu_read_cr0(void) { return vcr0; }

void cpu_write_cr0(u32 v)
{
    if ((v ^ vcr0) & CR0_TS)
        hypercall(__HYPERVISOR_fpu_taskswitch, !!(v & CR0_TS), 0, 0, 0, 0);
    vcr0 = v;
}

u32 cpu_read_cr2(void) { return vcpu()->cr2; }
u32 cpu_read_cr3(void) { return cur_cr3; }

void cpu_write_cr3(u32 pgdir)
{
    mmuext(MMUEXT_NEW_BASEPTR, pa_to_ma(pgdir) >> PGSHIFT, 0);
    cur_cr3 = pgdir;
}

u32 cpu_read_cr4(void) { return vcr4; }
void cpu_write_cr4(u32 v) { vcr4 = v; }

/* ---- descriptor tables ---- */
/* The GDT the hypervisor uses is a page-aligned copy of the kernel's:
 * system descriptors (the TSS) are left out -- stack_switch does a TSS's
 * job -- and DPL 0 becomes the kernel's ring, 1. */
void cpu_load_gdt(const struct segdesc *gdt, u16 limit)
{
    u32 n = (limit + 1u) / 8;
    cpu_virtual.gdt_base = (u32)gdt;
    cpu_virtual.gdt_limit = limit;
    for (u32 i = 0; i < n; i++) {
        struct segdesc d = gdt[i];
        if (!(d.hi & (1u << 12)))           /* S = 0: a system descriptor */
            d.lo = d.hi = 0;
        else if (((d.hi >> 13) & 3) == 0)
            d.hi |= (u32)KERNEL_RPL << 13;
        gdt_page[i] = d;
    }
    update_va((u32)gdt_page, pa_to_ma((u32)gdt_page) | PG_P);   /* read-only from now on */
    u32 frame = pa_to_ma((u32)gdt_page) >> PGSHIFT;
    check(hypercall(__HYPERVISOR_set_gdt, (u32)&frame, n, 0, 0, 0), "set_gdt");
    __asm__ volatile(
        "ljmp %0, $1f\n"
        "1:\n\t"
        "movw %w1, %%ax\n\t"
        "movw %%ax, %%ds\n\t"
        "movw %%ax, %%es\n\t"
        "movw %%ax, %%fs\n\t"
        "movw %%ax, %%gs\n\t"
        "movw %%ax, %%ss"
        : : "i"(KCODE_SEL), "i"(KDATA_SEL) : "eax", "memory");
}

void cpu_set_idt_entry(struct gatedesc *idt, int vector, void (*entry)(void), u8 type_attr)
{
    u32 off = (u32)entry;
    struct gatedesc *g = &idt[vector];
    g->off_lo = (u16)off;
    g->sel = KCODE_SEL;
    g->zero = 0;
    g->type_attr = type_attr;
    g->off_hi = (u16)(off >> 16);
}

/* The IDT becomes a trap table: a gate's DPL (at least the kernel's ring)
 * and, for interrupt gates, "mask events on entry". */
void cpu_load_idt(const struct gatedesc *idt, u16 limit)
{
    u32 n = 0;
    cpu_virtual.idt_base = (u32)idt;
    cpu_virtual.idt_limit = limit;
    for (u32 v = 0; v < (limit + 1u) / 8; v++) {
        const struct gatedesc *g = &idt[v];
        if (!(g->type_attr & 0x80))
            continue;
        u8 dpl = (g->type_attr >> 5) & 3;
        trap_table[n].vector = (u8)v;
        trap_table[n].flags = (dpl < KERNEL_RPL ? KERNEL_RPL : dpl) | ((g->type_attr & 0xf) == 0xe ? 4 : 0);
        trap_table[n].cs = KCODE_SEL;
        trap_table[n].address = (u32)g->off_lo | (u32)g->off_hi << 16;
        n++;
    }
    trap_table[n].address = 0;
    check(hypercall(__HYPERVISOR_set_trap_table, (u32)trap_table, 0, 0, 0, 0), "set_trap_table");
}

/* No TSS under the hypervisor (stack_switch does its job); LTR's effects on
 * the kernel's own table are kept: TR, and the descriptor marked busy. */
void cpu_load_tr(u16 sel)
{
    struct segdesc *gdt = (struct segdesc *)cpu_virtual.gdt_base;
    gdt[sel >> 3].hi |= 0x200;
    cpu_virtual.tr = sel;
}

void cpu_load_ldt(u16 sel)
{
    if (sel)
        panic("cpu_load_ldt: no LDTs under the hypervisor");
    mmuext(MMUEXT_SET_LDT, 0, 0);
    cpu_virtual.ldtr = sel;
}

void cpu_set_kernel_stack(u32 esp0)
{
    ktss.ss0 = KDATA_SEL;
    ktss.esp0 = esp0;
    check(hypercall(__HYPERVISOR_stack_switch, KDATA_SEL, esp0, 0, 0, 0), "stack_switch");
}

/* ---- paging: validated updates of machine-frame entries ---- */
void cpu_set_pte(pte_t *slot, pte_t value)
{
    u32 v = value & PG_P ? pa_to_ma(PTE_ADDR_PHYS(value)) | (value & (PGSIZE - 1)) : value;
    struct mmu_update u = { pa_to_ma((u32)slot), 0, v, 0 };
    check(hypercall(__HYPERVISOR_mmu_update, (u32)&u, 1, 0, DOMID_SELF, 0), "mmu_update");
}

void cpu_invlpg(u32 va) { mmuext(MMUEXT_INVLPG_LOCAL, va, 0); }

void cpu_pagetable_new(void *page) { update_va((u32)page, pa_to_ma((u32)page) | PG_P); }
void cpu_pagetable_free(void *page) { update_va((u32)page, pa_to_ma((u32)page) | PG_P | PG_W); }
void cpu_pagetable_pin(pde_t *pgdir) { mmuext(MMUEXT_PIN_L2_TABLE, pa_to_ma((u32)pgdir) >> PGSHIFT, 0); }
void cpu_pagetable_unpin(pde_t *pgdir) { mmuext(MMUEXT_UNPIN_TABLE, pa_to_ma((u32)pgdir) >> PGSHIFT, 0); }

/* ---- port I/O: the instructions (IOPL 1, from set_iopl) ---- */
u8 cpu_inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

void cpu_outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
