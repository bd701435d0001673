/* x86.h: IA-32 architectural constants and structures the kernel uses:
 * paging bits, segment selectors and descriptors, the TSS, the trap frame.
 * Data only; the instructions that load these live in cpuops_native.c. */
#ifndef TVOS_X86_H
#define TVOS_X86_H
#include "types.h"

/* ---- paging (two levels, 4 KiB pages) ---- */
#define PGSIZE      4096u
#define PGSHIFT     12
#define NPDENTRIES  1024
#define NPTENTRIES  1024
#define PG_P   0x001u   /* present */
#define PG_W   0x002u   /* writable */
#define PG_U   0x004u   /* user may access */
#define PG_A   0x020u   /* accessed (set by the CPU) */
#define PG_D   0x040u   /* dirty (set by the CPU) */
#define PG_PS  0x080u   /* 4 MiB page (in a PDE, with CR4.PSE) */
#define PDX(va)      (((u32)(va) >> 22) & 0x3ff)
#define PTX(va)      (((u32)(va) >> 12) & 0x3ff)
#ifdef TVOS_PV
/* Paravirtual: entries hold machine frames; the hypervisor's read-only
 * machine-to-physical table turns them back into pseudo-physical ones. */
#define PTE_ADDR(e)  (((const u32 *)0xfc000000u)[(u32)(e) >> 12] << 12)
#define PTE_ADDR_PHYS(e) ((u32)(e) & ~0xfffu)   /* a pseudo-physical entry's frame */
#else
#define PTE_ADDR(e)  ((u32)(e) & ~0xfffu)
#endif
#define PGROUNDUP(a)   (((u32)(a) + PGSIZE - 1) & ~(PGSIZE - 1))
#define PGROUNDDOWN(a) ((u32)(a) & ~(PGSIZE - 1))
typedef u32 pte_t;
typedef u32 pde_t;

/* ---- control registers ---- */
#define CR0_PE 0x00000001u
#define CR0_MP 0x00000002u
#define CR0_EM 0x00000004u
#define CR0_TS 0x00000008u
#define CR0_ET 0x00000010u
#define CR0_NE 0x00000020u
#define CR0_WP 0x00010000u
#define CR0_PG 0x80000000u
#define FL_IF   0x00000200u
#define FL_IOPL 0x00003000u

/* ---- segments: the GDT layout (index << 3 | RPL) ---- */
#define SEG_KCODE 1
#define SEG_KDATA 2
#define SEG_UCODE 3
#define SEG_UDATA 4
#define SEG_TSS   5
#define NSEGS     6
#ifdef TVOS_PV
#define KERNEL_RPL 1   /* paravirtual: the kernel runs at ring 1 */
#else
#define KERNEL_RPL 0
#endif
#define KCODE_SEL ((SEG_KCODE << 3) | KERNEL_RPL)
#define KDATA_SEL ((SEG_KDATA << 3) | KERNEL_RPL)
#define UCODE_SEL ((SEG_UCODE << 3) | 3)
#define UDATA_SEL ((SEG_UDATA << 3) | 3)
#define TSS_SEL   ((SEG_TSS << 3) | 0)

struct segdesc { u32 lo, hi; };

/* Access byte values.  The accessed bit is preset so the CPU never has to
 * write the GDT (and LAR results do not depend on whether it did). */
#define ACC_KCODE 0x9b   /* present, DPL 0, code, readable, accessed */
#define ACC_KDATA 0x93   /* present, DPL 0, data, writable, accessed */
#define ACC_UCODE 0xfb   /* present, DPL 3, code, readable, accessed */
#define ACC_UDATA 0xf3   /* present, DPL 3, data, writable, accessed */
#define ACC_TSS   0x89   /* present, DPL 0, available 32-bit TSS */

struct tss {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
};

struct gatedesc { u16 off_lo, sel; u8 zero, type_attr; u16 off_hi; };
#define GATE_INT   0x8e   /* present, DPL 0, 32-bit interrupt gate (clears IF) */
#define GATE_INT_USER 0xee   /* same with DPL 3: INT n allowed from ring 3 */

/* ---- traps ---- */
#define T_DIVIDE  0
#define T_DEBUG   1
#define T_NMI     2
#define T_BRKPT   3
#define T_OFLOW   4
#define T_BOUND   5
#define T_ILLOP   6
#define T_DEVICE  7
#define T_DBLFLT  8
#define T_TSS    10
#define T_SEGNP  11
#define T_STACK  12
#define T_GPFLT  13
#define T_PGFLT  14
#define T_FPERR  16
#define T_ALIGN  17
#define T_MCHK   18
#define T_SIMD   19
#define T_IRQ0   32   /* IRQ n arrives on vector T_IRQ0 + n */
#define T_SYSCALL 0x80
#define T_PROBE  0x81   /* used by the sensitivity probe's INT n round trip */

/* What trap entry saves on the kernel stack (see trapasm.S). */
struct trapframe {
    u32 edi, esi, ebp, oesp, ebx, edx, ecx, eax;   /* PUSHAL */
    u32 gs, fs, es, ds;
    u32 trapno, err;
    u32 eip, cs, eflags;                            /* pushed by the CPU */
    u32 esp, ss;                                    /* ... only from ring 3 */
};

#endif
