/* probe.c: the sensitivity probe (workload=probe).
 *
 * Robin and Irvine (USENIX Security 2000) found 17 IA-32 instructions (18
 * mnemonics) that are sensitive but not privileged: they read or depend on
 * privileged state without trapping when run outside ring 0, so a monitor
 * that runs the guest kernel deprivileged cannot intercept them (Robin and
 * Irvine, "Analysis of the Intel Pentium's Ability to Support a Secure
 * Virtual Machine Monitor", USENIX Security 2000).  This file runs
 * each of them in the kernel and prints what it saw, one line per
 * mnemonic.  Every value printed is fixed by the kernel's own setup (table
 * addresses are fixed in kernel.ld, the accessed bits are preset in the
 * GDT), so a correct platform prints exactly these lines:
 *
 *   probe sgdt base=0x00101800 limit=0x002f loaded=yes
 *   ...  (the full list is in docs/guest-os.md)
 *
 * This is the one file allowed to use such instructions directly: it
 * exists to observe them, not to run the kernel through them.  IF is still
 * changed only through cpuops. */
#include "kernel.h"
#include "cpuops.h"
#include <stdarg.h>

struct __attribute__((packed)) dtr { u16 limit; u32 base; };

static u32 crc;
static int printing;

static void line(const char *f, ...) __attribute__((format(printf, 1, 2)));
static void line(const char *f, ...)
{
    char buf[160];
    va_list ap;
    va_start(ap, f);
    int n = vfmt(buf, sizeof buf - 1, f, ap);
    va_end(ap);
    buf[n] = '\n';
    crc = crc32_update(crc, buf, (u32)n + 1);
    if (printing)
        console_write(buf, (u32)n + 1);
}

static const char *yn(int b) { return b ? "yes" : "no"; }

#ifdef TVOS_PV
/* Paravirtual: the kernel has not executed the instructions it observes
 * here since the port; what it observes is the virtual machine its
 * hypervisor interface defines (probe_xen.h). */
#include "probe_xen.h"
#else
#define SGDT(d) __asm__ volatile("sgdt %0" : "=m"(d))
#define SIDT(d) __asm__ volatile("sidt %0" : "=m"(d))
#define SLDT(s) __asm__ volatile("sldt %0" : "=r"(s))
#define STR(s) __asm__ volatile("str %0" : "=r"(s))
#define SMSW(s) __asm__ volatile("smsw %0" : "=r"(s))
#define PUSHF(v) __asm__ volatile("pushfl; popl %0" : "=r"(v))
#define POPF_PUSHF(v, f) __asm__ volatile("pushl %1; popfl; pushfl; popl %0" : "=r"(v) : "r"(f) : "cc")
#define VSEL(s) (s)

static u32 lar(u32 sel, int *ok)
{
    u32 v = 0;
    u8 z;
    __asm__ volatile("larl %2, %0\n\tsetz %1" : "+r"(v), "=q"(z) : "r"(sel) : "cc");
    *ok = z;
    return v;
}

static u32 lsl(u32 sel, int *ok)
{
    u32 v = 0;
    u8 z;
    __asm__ volatile("lsll %2, %0\n\tsetz %1" : "+r"(v), "=q"(z) : "r"(sel) : "cc");
    *ok = z;
    return v;
}

static int verr(u16 sel)
{
    u8 z;
    __asm__ volatile("verr %1\n\tsetz %0" : "=q"(z) : "r"(sel) : "cc");
    return z;
}

static int verw(u16 sel)
{
    u8 z;
    __asm__ volatile("verw %1\n\tsetz %0" : "=q"(z) : "r"(sel) : "cc");
    return z;
}
#endif

static void probe_once(void)
{
    struct dtr d;
    u16 sel;
    u32 v, w, x;
    int ok, ok2;

    /* SGDT / SIDT: where the descriptor tables are, as the CPU says. */
    SGDT(d);
    line("probe sgdt base=0x%08x limit=0x%04x loaded=%s", d.base, d.limit,
         yn(d.base == (u32)gdt && d.limit == sizeof gdt - 1));
    SIDT(d);
    line("probe sidt base=0x%08x limit=0x%04x loaded=%s", d.base, d.limit,
         yn(d.base == (u32)idt && d.limit == sizeof idt - 1));

    /* SLDT / STR: 16-bit register forms (the 32-bit forms leave the upper
     * half undefined on older CPUs). */
    SLDT(sel);
    line("probe sldt selector=0x%04x", sel);
    STR(sel);
    line("probe str selector=0x%04x rpl=%u", sel, sel & 3u);

    /* SMSW: the low 16 bits of CR0 (PE MP EM TS ET NE). */
    SMSW(sel);
    line("probe smsw msw=0x%04x pe=%u matches-cr0=%s", sel, sel & 1u,
         yn(sel == (cpu_read_cr0() & 0xffff)));

    /* PUSHF: IF and IOPL as pushed, after STI and after CLI. */
    cpu_irq_enable();
    PUSHF(v);
    cpu_irq_disable();
    PUSHF(w);
    line("probe pushf if-after-sti=%u if-after-cli=%u iopl=%u reserved1=%u",
         (v >> 9) & 1, (w >> 9) & 1, (w >> 12) & 3, (w >> 1) & 1);

    /* POPF: at CPL 0 it may change IF and IOPL (elsewhere it silently
     * does not).  Start with IF=1, pop a copy with IF clear, read back;
     * then pop IOPL=3, read back; then restore. */
    cpu_irq_enable();
    PUSHF(x);
    POPF_PUSHF(v, x & ~FL_IF);
    POPF_PUSHF(w, (x & ~FL_IF) | FL_IOPL);
    cpu_irq_restore(x & ~(FL_IF | FL_IOPL));
    line("probe popf if-cleared=%u iopl-set=%u", (v >> 9) & 1, (w >> 12) & 3);

    /* LAR: access rights (descriptor bits 8-23 masked) of our selectors.
     * The TSS reads as busy (type 0xb) because LTR marked it so. */
    u32 kc = lar(KCODE_SEL, &ok);
    u32 kd = lar(KDATA_SEL, &ok2);
    u32 uc = lar(UCODE_SEL, &ok);
    u32 ts = lar(TSS_SEL, &ok2);
    lar(0, &ok);
    line("probe lar kcode=0x%08x kdata=0x%08x ucode=0x%08x tss=0x%08x null=%s",
         kc, kd, uc, ts, ok ? "ok" : "fail");

    /* LSL: segment limits in bytes (granularity applied). */
    kc = lsl(KCODE_SEL, &ok);
    ts = lsl(TSS_SEL, &ok2);
    line("probe lsl kcode=0x%08x tss=0x%08x", kc, ts);

    /* VERR / VERW from CPL 0: code is readable, never writable. */
    line("probe verr kcode=%d kdata=%d ucode=%d tss=%d", verr(KCODE_SEL),
         verr(KDATA_SEL), verr(UCODE_SEL), verr(TSS_SEL));
    line("probe verw kcode=%d kdata=%d udata=%d", verw(KCODE_SEL),
         verw(KDATA_SEL), verw(UDATA_SEL));

    /* PUSH CS / PUSH SS: the selectors carry the CPL in their RPL.  Only
     * the low 16 bits are defined (newer CPUs write just those). */
    __asm__ volatile("pushl %%cs; popl %0" : "=r"(v));
    __asm__ volatile("pushl %%ss; popl %0" : "=r"(w));
    line("probe push cs=0x%04x ss=0x%04x cpl=%u", VSEL(v) & 0xffff, VSEL(w) & 0xffff, VSEL(v) & 3);

    /* POP DS / POP SS: load the user data selector into DS (allowed from
     * CPL 0) and our own into SS, read both back, restore DS. */
    __asm__ volatile("pushl %2; popl %%ds; movl %%ds, %0\n\t"
                     "pushl %3; popl %%ss; movl %%ss, %1\n\t"
                     "pushl %3; popl %%ds"
                     : "=r"(v), "=r"(w) : "i"(UDATA_SEL), "i"(KDATA_SEL));
    line("probe pop ds=0x%04x ss=0x%04x", VSEL(v) & 0xffff, VSEL(w) & 0xffff);

    /* MOV from segment registers. */
    u32 cs, ss, ds, es;
    __asm__ volatile("movl %%cs, %0" : "=r"(cs));
    __asm__ volatile("movl %%ss, %0" : "=r"(ss));
    __asm__ volatile("movl %%ds, %0" : "=r"(ds));
    __asm__ volatile("movl %%es, %0" : "=r"(es));
    line("probe mov cs=0x%04x ss=0x%04x ds=0x%04x es=0x%04x",
         VSEL(cs) & 0xffff, VSEL(ss) & 0xffff, VSEL(ds) & 0xffff, VSEL(es) & 0xffff);

    /* Far CALL: the callee sees the caller's CS on its stack, then a far
     * RET brings it back. */
    v = 0;
    __asm__ volatile("lcall %1, $1f\n\t"
                     "jmp 2f\n"
                     "1:\tmovl 4(%%esp), %0\n\t"
                     "lret\n"
                     "2:"
                     : "+r"(v) : "i"(KCODE_SEL) : "memory");
    line("probe call far pushed-cs=0x%04x returned=yes", VSEL(v) & 0xffff);

    /* Far JMP: reload CS with our own selector. */
    __asm__ volatile("ljmp %1, $1f\n1:\tmovl %%cs, %0" : "=r"(v) : "i"(KCODE_SEL));
    line("probe jmp far cs=0x%04x", VSEL(v) & 0xffff);

    /* Far RET to the same level: push CS:EIP and return to it. */
    __asm__ volatile("pushl %%cs; pushl $1f; lret\n1:\tmovl %%cs, %0" : "=r"(v) : : "memory");
    line("probe ret far cs=0x%04x", VSEL(v) & 0xffff);

    /* INT n: through a DPL-0 interrupt gate to trap(), which records the
     * CS in the frame, and back with IRET. */
    u32 before = probe_int_count;
    __asm__ volatile("int %0" : : "i"(T_PROBE) : "memory");
    line("probe int vector=0x%02x frame-cs=0x%04x returned=%s", T_PROBE,
         VSEL(probe_int_cs) & 0xffff, yn(probe_int_count == before + 1));
}

u32 probe_run(u32 iterations)
{
    u32 first = 0;
    u32 saved = cpu_irq_save();
    for (u32 i = 0; i < iterations; i++) {
        crc = CRC32_INIT;
        printing = i == 0;
        probe_once();
        if (i == 0)
            first = crc;
        else if (crc != first)
            panic("probe: pass %u observed something different from pass 0", i);
    }
    cpu_irq_restore(saved);
    return crc32_final(first);
}
