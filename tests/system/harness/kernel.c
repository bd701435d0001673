/* Snippet kernel, C part: builds the GDT/LDT/IDT/TSS and the page tables the
 * case asks for, enters the snippet at the chosen CPL and IOPL, records every
 * trap, resumes or ends the case, and dumps the final state over COM1.
 *
 * The kernel is the same binary on every machine it runs on (trapvisor,
 * QEMU, Bochs); only the snippet object linked to it changes.  Everything it
 * prints is therefore either architectural state or a deterministic function
 * of this code, and two machines that implement IA-32 identically print
 * identical dumps.  The dump format is parsed by runner.py.
 */
#include "layout.h"

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

#define CFG_MAGIC 0x43415345u      /* "CASE" */
#define CFG_END   0x454e4443u      /* "CDNE" */
#define F_KEEP_RF 1u               /* keep EFLAGS.RF in saved frames and the dump */
#define RF        0x10000u

/* Field order must match CONFIG_FIELDS in runner.py. */
struct config {
    u32 magic;
    u32 cpl, iopl, eflags;            /* entry CPL and IOPL; extra EFLAGS bits */
    u32 paging, cr0_set, cr0_clear, cr4;
    u32 user_pde, big_pde;            /* PDE 1 flags; PDE 2 value (0: absent) */
    u32 test_pte[TEST_PAGES];         /* flags (identity frame) or a whole PTE */
    u32 regs[8];                      /* EAX ECX EDX EBX (ESP) EBP ESI EDI */
    u32 sregs[4];                     /* DS ES FS GS at entry; ~0: the CPL's data segment */
    u32 cg_params;                    /* parameter count of the call gates */
    u32 idt_limit, gdt_limit, ldt_limit;  /* ~0: default */
    u32 iomap_base, tss_limit;        /* ~0: default */
    u32 io_allow[8];                  /* port | count << 16 cleared in the bitmap; 0 ends */
    u32 esp;                          /* entry ESP, 0: top of the snippet stack */
    u32 flags;                        /* F_KEEP_RF */
    u32 end;
};

struct poke { u32 kind, phase, addr, a, b, c; };
struct resume { u32 start, end, intvec, pad, pad2, pad3; };

extern const struct config cfg;
extern const struct poke case_pokes[];
extern const struct resume case_resume[];
extern char snippet_start[], snippet_end[];
extern char kstack_top[], r1stack_top[], r2stack_top[];
extern char trap_stubs[];
extern char cgt0[], cgt1[];
extern void case_setup(void);
extern void reload_segments(void);
extern void enter_frame(void *frame) __attribute__((noreturn));

/* The register frame trap_common builds (lowest address first). */
struct frame {
    u32 gs, fs, es, ds;
    u32 edi, esi, ebp, kesp, ebx, edx, ecx, eax;
    u32 vec, err;
    u32 eip, cs, eflags, esp, ss;
};

/* ------------------------------------------------------------ hardware */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

#define RD_CR(n) ({ u32 _v; __asm__ volatile("mov %%cr" #n ", %0" : "=r"(_v)); _v; })
#define WR_CR(n, v) __asm__ volatile("mov %0, %%cr" #n :: "r"((u32)(v)) : "memory")
#define RD_DR(n) ({ u32 _v; __asm__ volatile("mov %%db" #n ", %0" : "=r"(_v)); _v; })

static inline u32 cur_cs(void) { u32 v; __asm__ volatile("movl %%cs, %0" : "=r"(v)); return v & 0xffff; }
static inline u32 cur_ss(void) { u32 v; __asm__ volatile("movl %%ss, %0" : "=r"(v)); return v & 0xffff; }

#define COM1 0x3f8

static void serial_init(void)
{
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1 + 0, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xc7);
    outb(COM1 + 4, 0x03);
}

/* Output goes to a buffer and leaves in bursts of 16 bytes (the UART's FIFO)
 * after LSR.THRE says the FIFO is empty: the dump is most of a case's
 * instructions, and trapvisor pays for each one. */
static char outbuf[16384];
static u32 outlen;
static u16 hex2[256];                 /* byte -> two hex digits (little-endian chars) */

static void putc(char c)
{
    if (outlen < sizeof outbuf)
        outbuf[outlen++] = c;
}

static void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void puthex(u32 v, int digits)
{
    if (outlen + 8 > sizeof outbuf)
        return;
    char *p = outbuf + outlen;
    if (digits == 8) {
        *(u16 *)(p + 0) = hex2[v >> 24];
        *(u16 *)(p + 2) = hex2[(v >> 16) & 0xff];
        *(u16 *)(p + 4) = hex2[(v >> 8) & 0xff];
        *(u16 *)(p + 6) = hex2[v & 0xff];
    } else if (digits == 4) {
        *(u16 *)(p + 0) = hex2[(v >> 8) & 0xff];
        *(u16 *)(p + 2) = hex2[v & 0xff];
    } else if (digits == 2) {
        *(u16 *)p = hex2[v & 0xff];
    } else {
        for (int i = digits - 1; i >= 0; i--)
            p[digits - 1 - i] = "0123456789abcdef"[(v >> (4 * i)) & 0xf];
    }
    outlen += digits;
}

static void flush(void)
{
    const char *p = outbuf;
    u32 n = outlen;
    while (n) {
        u32 k = n < 16 ? n : 16;
        while (!(inb(COM1 + 5) & 0x20))
            ;
        __asm__ volatile("rep outsb" : "+S"(p), "+c"(k) : "d"(COM1) : "memory");
        n -= n < 16 ? n : 16;
    }
    outlen = 0;
}

static void hex_init(void)
{
    for (u32 b = 0; b < 256; b++)
        hex2[b] = (u16)("0123456789abcdef"[b >> 4] | ("0123456789abcdef"[b & 0xf] << 8));
}

static void kv(const char *k, u32 v, int digits)
{
    puts(k);
    putc(' ');
    puthex(v, digits);
    putc('\n');
}

static void pic_init(void)
{
    /* Remap to 0x20/0x28 and mask everything: no interrupt can reach the
     * snippet, whatever IF it runs with. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, 0x20); outb(0xa1, 0x28);
    outb(0x21, 0x04); outb(0xa1, 0x02);
    outb(0x21, 0x01); outb(0xa1, 0x01);
    outb(0x21, 0xff); outb(0xa1, 0xff);
}

/* gcc may call these for structure copies even when freestanding. */
void *memcpy(void *d, const void *s, u32 n)
{
    u8 *dp = d;
    const u8 *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, u32 n)
{
    u8 *dp = d;
    while (n--)
        *dp++ = (u8)c;
    return d;
}

static void fill32(void *p, u32 v, u32 n)
{
    __asm__ volatile("rep stosl" : "+D"(p), "+c"(n) : "a"(v) : "memory");
}

static void zero(void *p, u32 n)
{
    __asm__ volatile("rep stosl" : "+D"(p), "+c"(n) : "a"(0) : "memory");
}

__attribute__((noreturn)) static void die(const char *why)
{
    puts("=== HARNESS ERROR ");
    puts(why);
    puts(" ===\n");
    flush();
    outb(EXIT_PORT, 0x3e);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ------------------------------------------------------------ tables */
u64 gdt[GDT_ENTRIES] __attribute__((aligned(16)));
u64 ldt[LDT_ENTRIES] __attribute__((aligned(16)));
u64 idt[256] __attribute__((aligned(16)));

struct tss {
    u16 link, r0; u32 esp0; u16 ss0, r1; u32 esp1; u16 ss1, r2; u32 esp2; u16 ss2, r3;
    u32 cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u16 es, r4, cs, r5, ss, r6, ds, r7, fs, r8, gs, r9, ldt, r10, trap, iomap;
};

struct tss_area {
    struct tss t;
    u8 iobitmap[8192];
    u8 term;
} __attribute__((packed));

struct tss_area tss __attribute__((aligned(128)));
struct tss tss2 __attribute__((aligned(128)));

u32 pd[1024] __attribute__((aligned(4096)));
u32 pt0[1024] __attribute__((aligned(4096)));
u32 pt1[1024] __attribute__((aligned(4096)));
u32 pt2[1024] __attribute__((aligned(4096)));

static u64 seg(u32 base, u32 limit, u32 access, u32 flags)
{
    return (u64)(limit & 0xffff) | ((u64)(base & 0xffffff) << 16) | ((u64)(access & 0xff) << 40)
        | ((u64)((limit >> 16) & 0xf) << 48) | ((u64)(flags & 0xf) << 52)
        | ((u64)(base >> 24) << 56);
}

static u64 gate(u32 sel, u32 off, u32 access, u32 params)
{
    return (u64)(off & 0xffff) | ((u64)(sel & 0xffff) << 16) | ((u64)(params & 0x1f) << 32)
        | ((u64)(access & 0xff) << 40) | ((u64)(off >> 16) << 48);
}

#define FLAT 0xfffff
#define G32  0xc            /* G=1, D/B=1 */

static u32 stub(u32 v) { return (u32)trap_stubs + 16 * v; }

static void build_tables(void)
{
    zero(gdt, sizeof gdt / 4);
    gdt[KCODE / 8]   = seg(0, FLAT, 0x9b, G32);
    gdt[KDATA / 8]   = seg(0, FLAT, 0x93, G32);
    gdt[UCODE / 8]   = seg(0, FLAT, 0xfb, G32);
    gdt[UDATA / 8]   = seg(0, FLAT, 0xf3, G32);
    gdt[R1CODE / 8]  = seg(0, FLAT, 0xbb, G32);
    gdt[R1DATA / 8]  = seg(0, FLAT, 0xb3, G32);
    gdt[R2CODE / 8]  = seg(0, FLAT, 0xdb, G32);
    gdt[R2DATA / 8]  = seg(0, FLAT, 0xd3, G32);
    gdt[TSSSEL / 8]  = seg((u32)&tss, sizeof tss - 1, 0x89, 0);
    gdt[LDTSEL / 8]  = seg((u32)ldt, sizeof ldt - 1, 0x82, 0);
    gdt[CGATE3 / 8]  = gate(KCODE, (u32)cgt0, 0xec, cfg.cg_params);
    gdt[CGATE0 / 8]  = gate(KCODE, (u32)cgt0, 0x8c, cfg.cg_params);
    gdt[CGATENP / 8] = gate(KCODE, (u32)cgt0, 0x6c, cfg.cg_params);
    gdt[CONF0 / 8]   = seg(0, FLAT, 0x9f, G32);
    gdt[UDATA2 / 8]  = seg(0, FLAT, 0xf3, G32);
    gdt[EXPDOWN / 8] = seg(0, 0x402, 0xf7, G32);
    gdt[NPDATA / 8]  = seg(0, FLAT, 0x73, G32);
    gdt[RODATA / 8]  = seg(0, FLAT, 0xf1, G32);
    gdt[SMALL / 8]   = seg(DATA_ADDR, 0xff, 0xf3, 0x4);
    gdt[XOCODE / 8]  = seg(0, FLAT, 0xf9, G32);
    gdt[TSS2SEL / 8] = seg((u32)&tss2, sizeof tss2 - 1, 0x89, 0);
    gdt[CGATE1 / 8]  = gate(R1CODE, (u32)cgt1, 0xec, cfg.cg_params);
    gdt[TASKGATE / 8] = gate(TSS2SEL, 0, 0xe5, 0);
    gdt[CONF3 / 8]   = seg(0, FLAT, 0xff, G32);
    gdt[UDATA3 / 8]  = seg(0, FLAT, 0xf3, G32);
    gdt[UDATANA / 8] = seg(0, FLAT, 0xf2, G32);
    gdt[KDATARO / 8] = seg(0, FLAT, 0x91, G32);
    gdt[NPCODE / 8]  = seg(0, FLAT, 0x1b, G32);

    ldt[LDATA3 / 8]  = seg(0, FLAT, 0xf3, G32);
    ldt[LCODE3 / 8]  = seg(0, FLAT, 0xfb, G32);
    ldt[LNPDATA / 8] = seg(0, FLAT, 0x73, G32);
    ldt[LDATA0 / 8]  = seg(0, FLAT, 0x93, G32);

    for (u32 v = 0; v < 256; v++)
        idt[v] = gate(KCODE, stub(v), 0x8e, 0);
    idt[3] = gate(KCODE, stub(3), 0xee, 0);
    idt[4] = gate(KCODE, stub(4), 0xee, 0);
    idt[V_DUMPRING] = gate(KCODE, stub(V_DUMPRING), 0xee, 0);
    idt[V_END]     = gate(KCODE, stub(V_END), 0xee, 0);
    idt[V_TRAP3]   = gate(KCODE, stub(V_TRAP3), 0xef, 0);
    idt[V_INT3]    = gate(KCODE, stub(V_INT3), 0xee, 0);
    idt[V_INT0]    = gate(KCODE, stub(V_INT0), 0x8e, 0);
    idt[V_NP3]     = gate(KCODE, stub(V_NP3), 0x6f, 0);
    idt[V_RING1]   = gate(R1CODE, stub(V_RING1), 0xee, 0);
    idt[V_CONF0]   = gate(CONF0, stub(V_CONF0), 0xee, 0);
    idt[V_RING2]   = gate(R2CODE, stub(V_RING2), 0xee, 0);
    idt[V_CONF3]   = gate(CONF3, stub(V_CONF3), 0xee, 0);
    idt[V_TASK]    = gate(TSS2SEL, 0, 0xe5, 0);
    idt[V_BADTYPE] = gate(KCODE, stub(V_BADTYPE), 0xec, 0);
    idt[V_NULLSEL] = gate(0, stub(V_NULLSEL), 0xee, 0);
    idt[V_DATASEL] = gate(UDATA, stub(V_DATASEL), 0xee, 0);
    idt[V_NPCODE]  = gate(NPCODE, stub(V_NPCODE), 0xee, 0);
    idt[V_RING3]   = gate(UCODE, stub(V_RING3), 0xee, 0);

    zero(&tss, sizeof tss / 4);
    tss.t.esp0 = (u32)kstack_top;
    tss.t.ss0 = KDATA;
    tss.t.esp1 = (u32)r1stack_top;
    tss.t.ss1 = R1DATA | 1;
    tss.t.esp2 = (u32)r2stack_top;
    tss.t.ss2 = R2DATA | 2;
    tss.t.ldt = LDTSEL;
    tss.t.iomap = cfg.iomap_base == ~0u ? 0x68 : cfg.iomap_base;
    fill32(tss.iobitmap, 0xffffffffu, sizeof tss.iobitmap / 4);
    tss.term = 0xff;
    for (int i = 0; i < 8 && cfg.io_allow[i]; i++) {
        u32 port = cfg.io_allow[i] & 0xffff, n = cfg.io_allow[i] >> 16;
        for (u32 p = port; p < port + n && p < 0x10000; p++)
            tss.iobitmap[p >> 3] &= (u8)~(1u << (p & 7));
    }
    if (cfg.ldt_limit != ~0u)
        gdt[LDTSEL / 8] = seg((u32)ldt, cfg.ldt_limit, 0x82, 0);
    if (cfg.tss_limit != ~0u)
        gdt[TSSSEL / 8] = seg((u32)&tss, cfg.tss_limit, 0x89, 0);
    zero(&tss2, sizeof tss2 / 4);
    tss2.iomap = sizeof tss2;

    /* Identity page tables: 0-2 MiB (the kernel), 4 MiB + 128 KiB (the
     * snippet's region), 8 MiB + 64 KiB (pt2), and PDE 2 as the case's 4 MiB
     * page; everything else is not present.  (Mapping only what is used
     * keeps the boot short on trapvisor.) */
    zero(pd, 1024);
    zero(pt0, 1024);
    zero(pt1, 1024);
    zero(pt2, 1024);
    for (u32 i = 0; i < 512; i++)
        pt0[i] = (i << 12) | 0x7;
    for (u32 i = 0; i < 0x20; i++)
        pt1[i] = (0x400000 + (i << 12)) | 0x7;
    for (u32 i = 0; i < 0x10; i++)
        pt2[i] = (BIG_ADDR + (i << 12)) | 0x7;
    for (u32 i = 0; i < TEST_PAGES; i++) {
        u32 v = cfg.test_pte[i];
        u32 idx = ((TEST_ADDR - 0x400000) >> 12) + i;
        pt1[idx] = v >= 0x1000 ? v : ((0x400000 + (idx << 12)) | v);
    }
    pd[0] = (u32)pt0 | 0x7;
    pd[1] = (u32)pt1 | cfg.user_pde;
    /* PDE 2: with PS, the case's 4 MiB page as given; otherwise pt2 (an
     * identity map of 8-12 MiB, all PTEs P|RW|US) with the case's flags. */
    pd[2] = (cfg.big_pde & 0x80) ? cfg.big_pde : cfg.big_pde ? ((u32)pt2 | (cfg.big_pde & 0xfff)) : 0;
}

static void apply_pokes(u32 phase)
{
    for (const struct poke *p = case_pokes; p->kind; p++) {
        if (p->phase != phase)
            continue;
        switch (p->kind) {
        case 1:                          /* raw store: a (low), b (high), c = size */
            if (p->c == 1) *(volatile u8 *)p->addr = (u8)p->a;
            else if (p->c == 2) *(volatile u16 *)p->addr = (u16)p->a;
            else if (p->c == 4) *(volatile u32 *)p->addr = p->a;
            else { ((volatile u32 *)p->addr)[0] = p->a; ((volatile u32 *)p->addr)[1] = p->b; }
            break;
        case 2:                          /* gate: a = selector, b = offset, c = access | params << 8 */
            *(volatile u64 *)p->addr = gate(p->a, p->b, p->c & 0xff, p->c >> 8);
            break;
        case 3:                          /* segment: a = base, b = limit, c = access | flags << 8 */
            *(volatile u64 *)p->addr = seg(p->a, p->b, p->c & 0xff, p->c >> 8);
            break;
        default:
            die("bad poke");
        }
    }
}

struct dtr { u16 limit; u32 base; } __attribute__((packed));

static void load_dtr(int idt_table, u32 base, u32 limit)
{
    struct dtr d = { (u16)limit, base };
    if (idt_table)
        __asm__ volatile("lidt %0" :: "m"(d));
    else
        __asm__ volatile("lgdt %0" :: "m"(d));
}

/* ------------------------------------------------------------ trap log */
struct trap {
    u32 vec, err, eip, cs, eflags, esp, ss, cr2, dr6, hcs, hss, hesp, hfl, outer;
};

static struct trap traps[MAX_TRAPS];
static u32 ntraps;
static struct frame end_frame;
static u32 end_ss, end_esp, end_reason, end_pending;

enum { R_END, R_FAULT, R_LIMIT, R_DF, R_OUTSIDE };
static const char *const reason_names[] = { "end", "fault", "trap-limit", "double-fault", "outside" };

static void dump(const struct frame *f, u32 ss, u32 esp, u32 reason) __attribute__((noreturn));

static void put_dtr(const char *name, const struct dtr *d)
{
    puts(name);
    putc(' ');
    puthex(d->base, 8);
    putc(' ');
    puthex(d->limit, 4);
    putc('\n');
}

static void mem_region(const char *name, u32 addr, u32 len)
{
    const volatile u32 *p = (const volatile u32 *)addr;
    for (u32 off = 0; off < len; off += 32, p += 8) {
        u32 any = 0;
        for (int i = 0; i < 8; i++)
            any |= p[i];
        if (!any)
            continue;
        puts("M ");
        puts(name);
        putc(' ');
        puthex(addr + off, 8);
        putc(':');
        for (int i = 0; i < 8; i++) {
            putc(' ');
            puthex(p[i], 8);
        }
        putc('\n');
    }
}

static void dump(const struct frame *f, u32 ss, u32 esp, u32 reason)
{
    u32 cr0 = RD_CR(0), cr2 = RD_CR(2), cr3 = RD_CR(3), cr4 = RD_CR(4);
    u32 dr6 = RD_DR(6), dr7 = RD_DR(7);
    struct dtr g, i;
    u32 ldtr = 0, tr = 0;
    __asm__ volatile("sgdt %0" : "=m"(g));
    __asm__ volatile("sidt %0" : "=m"(i));
    __asm__ volatile("sldt %0" : "=r"(ldtr));
    __asm__ volatile("str %0" : "=r"(tr));
    /* No data breakpoints on the dump's own reads. */
    __asm__ volatile("mov %0, %%db7" :: "r"(0x400u));
    /* Read memory physically from here on (the kernel is identity mapped). */
    WR_CR(0, cr0 & 0x7fffffff);

    puts("=== TVSYS DUMP v1 ===\n");
    puts("reason ");
    puts(reason_names[reason]);
    putc('\n');
    kv("EAX", f->eax, 8); kv("ECX", f->ecx, 8); kv("EDX", f->edx, 8); kv("EBX", f->ebx, 8);
    kv("ESP", esp, 8); kv("EBP", f->ebp, 8); kv("ESI", f->esi, 8); kv("EDI", f->edi, 8);
    kv("EIP", f->eip, 8);
    kv("EFLAGS", f->eflags, 8);
    kv("CS", f->cs & 0xffff, 4); kv("SS", ss & 0xffff, 4);
    kv("DS", f->ds & 0xffff, 4); kv("ES", f->es & 0xffff, 4);
    kv("FS", f->fs & 0xffff, 4); kv("GS", f->gs & 0xffff, 4);
    put_dtr("GDTR", &g);
    put_dtr("IDTR", &i);
    kv("LDTR", ldtr & 0xffff, 4);
    kv("TR", tr & 0xffff, 4);
    kv("CR0", cr0, 8); kv("CR2", cr2, 8); kv("CR3", cr3, 8); kv("CR4", cr4, 8);
    kv("DR6", dr6, 8); kv("DR7", dr7, 8);
    kv("TRAPS", ntraps, 2);
    for (u32 n = 0; n < ntraps; n++) {
        const struct trap *t = &traps[n];
        puts("T ");
        puthex(t->vec & 0xff, 2);
        putc(' ');
        if (t->vec & 0x100) puthex(t->err, 4); else puts("----");
        puts(" cs="); puthex(t->cs & 0xffff, 4);
        puts(" eip="); puthex(t->eip, 8);
        puts(" fl="); puthex(t->eflags, 8);
        if (t->outer) {
            puts(" ss="); puthex(t->ss & 0xffff, 4);
            puts(" esp="); puthex(t->esp, 8);
        }
        if ((t->vec & 0xff) == 14 && (t->hcs & 3) == 0) { puts(" cr2="); puthex(t->cr2, 8); }
        if ((t->vec & 0xff) == 1 && (t->hcs & 3) == 0) { puts(" dr6="); puthex(t->dr6, 8); }
        puts(" hfl="); puthex(t->hfl & ~0x10000u, 8);
        puts(" h="); puthex(t->hcs, 4); putc('/'); puthex(t->hss, 4); putc(':'); puthex(t->hesp, 8);
        putc('\n');
    }
    if (cfg.paging) {
        for (u32 n = 0; n < 4; n++)
            if (pd[n]) { puts("P pde"); puthex(n, 1); putc(' '); puthex(pd[n], 8); putc('\n'); }
        for (u32 n = 0; n < 0x20; n++) {
            puts("P pte");
            puthex(0x400 + n, 3);
            putc(' ');
            puthex(pt1[n], 8);
            putc('\n');
        }
    }
    mem_region("gdt", (u32)gdt, sizeof gdt);
    mem_region("ldt", (u32)ldt, sizeof ldt);
    mem_region("tss", (u32)&tss, 0x68);
    mem_region("tss2", (u32)&tss2, 0x68);
    mem_region("data", DATA_ADDR, 4096);
    mem_region("ustack", USTACK_ADDR + 4096 - 64, 64);
    mem_region("kstack", (u32)kstack_top - 64, 64);
    mem_region("r1stack", (u32)r1stack_top - 64, 64);
    mem_region("r2stack", (u32)r2stack_top - 64, 64);
    for (u32 n = 0; n < TEST_PAGES; n++)
        mem_region("test", TEST_ADDR + n * 4096, 64);
    if (cfg.big_pde)
        mem_region("big", BIG_ADDR, 64);
    if (cfg.paging && cfg.big_pde && !(cfg.big_pde & 0x80))
        for (u32 n = 0; n < 4; n++) {
            puts("P pte");
            puthex(0x800 + n, 3);
            putc(' ');
            puthex(pt2[n], 8);
            putc('\n');
        }
    puts("=== END ===\n");
    flush();
    outb(EXIT_PORT, EXIT_VALUE);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* End the case from a handler: dump now at ring 0, or hand the frame to
 * the ring-0 V_DUMPRING handler from an outer ring. */
static void finish(struct frame *f, u32 cpl, u32 reason)
{
    u32 ss, esp;
    if ((f->cs & 3) != cpl) {
        ss = f->ss;
        esp = f->esp;
    } else {
        ss = cur_ss();
        esp = (u32)&f->esp;
    }
    if (cpl == 0)
        dump(f, ss, esp, reason);
    end_frame = *f;
    end_ss = ss;
    end_esp = esp;
    end_reason = reason;
    end_pending = 1;
    __asm__ volatile("int %0" :: "i"(V_DUMPRING));
    for (;;)
        ;
}

void trap_c(struct frame *f)
{
    u32 vec = f->vec & 0xff;
    u32 hcs = cur_cs(), cpl = hcs & 3;
    u32 hfl;
    __asm__ volatile("pushfl; popl %0" : "=r"(hfl));   /* IF/TF/NT as the gate left them */

    /* Intel CPUs set RF in the EFLAGS image of a fault's frame, QEMU does
     * not; unless the case asks for it, RF is cleared in the frame itself
     * (so that it shows neither in the dump nor in memory) before anything
     * looks at it.  Nothing in the snippets depends on RF (no instruction
     * breakpoints). */
    if (!(cfg.flags & F_KEEP_RF))
        f->eflags &= ~RF;

    if (vec == V_DUMPRING && end_pending && cpl == 0)
        dump(&end_frame, end_ss, end_esp, end_reason);
    if (vec == V_END)
        finish(f, cpl, R_END);

    if (ntraps < MAX_TRAPS) {
        struct trap *t = &traps[ntraps];
        t->vec = f->vec & 0x1ff;
        t->err = f->err;
        t->eip = f->eip;
        t->cs = f->cs;
        t->eflags = f->eflags;
        t->outer = (f->cs & 3) != cpl;
        t->esp = t->outer ? f->esp : 0;
        t->ss = t->outer ? f->ss : 0;
        t->cr2 = (vec == 14 && cpl == 0) ? RD_CR(2) : 0;
        t->dr6 = (vec == 1 && cpl == 0) ? RD_DR(6) : 0;
        t->hcs = hcs;
        t->hss = cur_ss();
        t->hesp = (u32)&f->eip;
        t->hfl = hfl;
    }
    ntraps++;
    if (vec == 1 && cpl == 0) {
        /* Like an OS: DR6 is cleared after each #DB, and an instruction
         * breakpoint (DR7 R/W = 00) is stepped over by returning with RF=1. */
        u32 dr6 = RD_DR(6), dr7 = RD_DR(7);
        for (int n = 0; n < 4; n++)
            if ((dr6 >> n) & 1 && ((dr7 >> (16 + 4 * n)) & 3) == 0)
                f->eflags |= RF;
        __asm__ volatile("mov %0, %%db6" :: "r"(0xffff0ff0u));
    }
    if (ntraps >= MAX_TRAPS)
        finish(f, cpl, R_LIMIT);
    if (vec == 8)
        finish(f, cpl, R_DF);
    if (f->eip < (u32)snippet_start || f->eip >= (u32)snippet_end)
        finish(f, cpl, R_OUTSIDE);
    /* Traps: the saved EIP already points after the instruction. */
    if (vec == 1 || vec == 3 || vec == 4)
        return;
    for (const struct resume *r = case_resume; r->start; r++)
        if (r->end == f->eip && r->intvec == vec)
            return;
    /* Faults: resume after the faulting instruction. */
    for (const struct resume *r = case_resume; r->start; r++)
        if (r->start == f->eip) {
            f->eip = r->end;
            return;
        }
    finish(f, cpl, R_FAULT);
}

/* ------------------------------------------------------------ entry */
static const u32 code_sel[4] = { KCODE, R1CODE | 1, R2CODE | 2, UCODE | 3 };
static const u32 data_sel[4] = { KDATA, R1DATA | 1, R2DATA | 2, UDATA | 3 };

/* The entry frame: like struct frame without the vector and error code. */
struct eframe {
    u32 gs, fs, es, ds;
    u32 edi, esi, ebp, kesp, ebx, edx, ecx, eax;
    u32 eip, cs, eflags, esp, ss;
};

static struct eframe outer_frame;

void kmain(u32 magic)
{
    (void)magic;
    ntraps = 0;
    end_pending = 0;
    outlen = 0;
    hex_init();
    serial_init();
    pic_init();
    if (cfg.magic != CFG_MAGIC || cfg.end != CFG_END)
        die("case configuration does not match kernel.c");

    /* The snippet's region and the test pages are not cleared: RAM above
     * 1 MiB starts zeroed on every machine the harness runs on, and
     * clearing 64 KiB costs trapvisor more than the rest of the boot. */
    build_tables();
    apply_pokes(0);

    load_dtr(0, (u32)gdt, sizeof gdt - 1);
    reload_segments();
    load_dtr(1, (u32)idt, sizeof idt - 1);
    __asm__ volatile("lldt %w0" :: "r"(LDTSEL));
    __asm__ volatile("ltr %w0" :: "r"(TSSSEL));

    WR_CR(0, 0x00000011);                /* PE, ET; CD, NW, WP, AM, ... clear */
    case_setup();

    WR_CR(4, cfg.cr4);
    u32 cr0 = RD_CR(0);
    if (cfg.paging) {
        WR_CR(3, (u32)pd);
        cr0 |= 0x80000000;
    }
    WR_CR(0, (cr0 | cfg.cr0_set) & ~cfg.cr0_clear);
    apply_pokes(1);
    if (cfg.paging)
        WR_CR(3, (u32)pd);
    if (cfg.gdt_limit != ~0u)
        load_dtr(0, (u32)gdt, cfg.gdt_limit);
    if (cfg.idt_limit != ~0u)
        load_dtr(1, (u32)idt, cfg.idt_limit);

    u32 cpl = cfg.cpl & 3;
    u32 top = cfg.esp ? cfg.esp : USTACK_ADDR + 4096;
    struct eframe *e = cpl == 0 ? (struct eframe *)(top - sizeof(struct eframe) + 8) : &outer_frame;
    u32 ds = data_sel[cpl];
    e->ds = cfg.sregs[0] == ~0u ? ds : cfg.sregs[0];
    e->es = cfg.sregs[1] == ~0u ? ds : cfg.sregs[1];
    e->fs = cfg.sregs[2] == ~0u ? ds : cfg.sregs[2];
    e->gs = cfg.sregs[3] == ~0u ? ds : cfg.sregs[3];
    e->eax = cfg.regs[0]; e->ecx = cfg.regs[1]; e->edx = cfg.regs[2]; e->ebx = cfg.regs[3];
    e->ebp = cfg.regs[5]; e->esi = cfg.regs[6]; e->edi = cfg.regs[7];
    e->eip = (u32)snippet_start;
    e->cs = code_sel[cpl];
    e->eflags = 0x2 | ((cfg.iopl & 3) << 12) | cfg.eflags;
    if (cpl) {
        e->esp = top;
        e->ss = ds;
    }
    enter_frame(e);
}
