/* Fixed layout of the snippet kernel: GDT selectors, LDT selectors, IDT
 * vectors with special gates, and the addresses of the snippet's pages.
 * Shared by entry.S, kernel.c and (parsed by) runner.py: keep it to
 * "#define NAME value" lines. */
#ifndef LAYOUT_H
#define LAYOUT_H

/* GDT (limit 0xff, 32 entries).  Every code segment a trap gate can lead to
 * is followed by a flat data segment of the same DPL (trap_common loads
 * CS + 8 into DS/ES). */
#define KCODE     0x08   /* ring 0 code, flat, 32-bit */
#define KDATA     0x10   /* ring 0 data, flat */
#define UCODE     0x18   /* ring 3 code, flat */
#define UDATA     0x20   /* ring 3 data, flat */
#define R1CODE    0x28   /* ring 1 code, flat */
#define R1DATA    0x30   /* ring 1 data, flat */
#define R2CODE    0x38   /* ring 2 code, flat */
#define R2DATA    0x40   /* ring 2 data, flat */
#define TSSSEL    0x48   /* the 32-bit TSS (busy after LTR), with the I/O bitmap */
#define LDTSEL    0x50   /* the LDT */
#define CGATE3    0x58   /* call gate, DPL 3 -> KCODE:cgt0, cfg.cg_params parameters */
#define CGATE0    0x60   /* call gate, DPL 0 -> KCODE:cgt0 */
#define CGATENP   0x68   /* call gate, DPL 3, not present */
#define CONF0     0x70   /* conforming code, DPL 0, readable, flat */
#define UDATA2    0x78   /* ring 3 data, flat (data partner of CONF0) */
#define EXPDOWN   0x80   /* ring 3 expand-down data, G=1, limit 0x402fff: offsets >= 0x403000 valid */
#define NPDATA    0x88   /* ring 3 data, not present */
#define RODATA    0x90   /* ring 3 read-only data, flat */
#define SMALL     0x98   /* ring 3 data, base 0x402000 (the data page), limit 0xff */
#define XOCODE    0xa0   /* ring 3 execute-only code, flat */
#define TSS2SEL   0xa8   /* a second 32-bit TSS, available */
#define CGATE1    0xb0   /* call gate, DPL 3 -> R1CODE:cgt1, cfg.cg_params parameters */
#define TASKGATE  0xb8   /* task gate, DPL 3 -> TSS2SEL */
#define CONF3     0xc0   /* conforming code, DPL 3, readable, flat */
#define UDATA3    0xc8   /* ring 3 data, flat (data partner of CONF3) */
#define UDATANA   0xd0   /* ring 3 data, flat, accessed bit clear */
#define KDATARO   0xd8   /* ring 0 read-only data, flat */
#define NPCODE    0xe0   /* ring 0 code, not present */
#define SPARE0    0xe8   /* spare slots: zero unless a case pokes them */
#define SPARE1    0xf0
#define SPARE2    0xf8
#define GDT_ENTRIES 32

/* LDT (limit 0x1f, 4 entries); selectors with TI=1. */
#define LDATA3    0x04   /* ring 3 data, flat */
#define LCODE3    0x0c   /* ring 3 code, flat */
#define LNPDATA   0x14   /* ring 3 data, not present */
#define LDATA0    0x1c   /* ring 0 data, flat */
#define LDT_ENTRIES 4

/* IDT: 256 gates to trap_stubs; interrupt gates with DPL 0 unless listed. */
#define V_DUMPRING 0x7e  /* DPL 3: used by outer-ring handlers to end the case */
#define V_END     0x7f   /* DPL 3: the snippet's end sentinel (int $0x7f) */
#define V_TRAP3   0x80   /* trap gate, DPL 3 */
#define V_INT3    0x81   /* interrupt gate, DPL 3 */
#define V_INT0    0x82   /* interrupt gate, DPL 0 */
#define V_NP3     0x83   /* trap gate, DPL 3, not present */
#define V_RING1   0x84   /* interrupt gate, DPL 3 -> R1CODE */
#define V_CONF0   0x85   /* interrupt gate, DPL 3 -> CONF0 (conforming, DPL 0) */
#define V_RING2   0x86   /* interrupt gate, DPL 3 -> R2CODE */
#define V_CONF3   0x87   /* interrupt gate, DPL 3 -> CONF3 (conforming, DPL 3) */
#define V_TASK    0x88   /* task gate, DPL 3 -> TSS2SEL */
#define V_BADTYPE 0x89   /* DPL 3, type = call gate (not valid in the IDT) */
#define V_NULLSEL 0x8a   /* interrupt gate, DPL 3, null selector */
#define V_DATASEL 0x8b   /* interrupt gate, DPL 3, selector = UDATA */
#define V_NPCODE  0x8c   /* interrupt gate, DPL 3, selector = NPCODE */
#define V_RING3   0x8d   /* interrupt gate, DPL 3 -> UCODE (a ring-3 handler) */

/* Memory: the kernel is at 1 MiB; the snippet's region at 4 MiB. */
#define SNIPPET_ADDR 0x400000  /* snippet code, up to 8 KiB */
#define DATA_ADDR    0x402000  /* snippet data page */
#define USTACK_ADDR  0x403000  /* snippet stack page (top 0x404000), any CPL */
#define TEST_ADDR    0x410000  /* 16 test pages, PTE flags from cfg.test_pte */
#define TEST_PAGES   16
#define BIG_ADDR     0x800000  /* PDE 2: a 4 MiB page when cfg.big_pde is set */

#define EXIT_PORT    0xf4
#define EXIT_VALUE   0x10      /* QEMU exit status (0x10 << 1) | 1 = 33 */
#define MAX_TRAPS    48

#endif
