/* main.c: a hostile paravirtual kernel for technique pv.
 *
 * Each attack is one hypercall (or a batch) that a validating hypervisor
 * must refuse: it prints "pv-attack: NAME -> RESULT" with the (negative)
 * Xen errno.  tests/vmm/techniques/test_pv_hostile.py holds every result
 * to the error Xen returns and checks the hypervisor's frames afterwards.
 * The last attack stores into the hypervisor's hole through the flat ring-1
 * data segment: the segment's truncated limit faults it (#GP), and with no
 * trap table the domain is crashed. */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

struct start_info {
    char magic[32];
    u32 nr_pages, shared_info, flags, store_mfn, store_evtchn, console_mfn, console_evtchn;
    u32 pt_base, nr_pt_frames, mfn_list, mod_start, mod_len;
    char cmd_line[1024];
};
struct mmu_update { u32 ptr_lo, ptr_hi, val_lo, val_hi; };
struct trap_info { u8 vector, flags; u16 cs; u32 address; };

extern char hypercall_page[];

static long hc(u32 nr, u32 a1, u32 a2, u32 a3, u32 a4, u32 a5)
{
    long r;
    void *fn = hypercall_page + nr * 32;
    __asm__ volatile("call *%[fn]" : "=a"(r), "+b"(a1), "+c"(a2), "+d"(a3), "+S"(a4), "+D"(a5)
                     : [fn] "m"(fn) : "memory");
    return r;
}

static u32 slen(const char *s) { u32 n = 0; while (s[n]) n++; return n; }
static void puts_(const char *s) { hc(18, 0, slen(s), (u32)s, 0, 0); }

static void report(const char *name, long rc)
{
    char buf[96];
    u32 n = 0;
    const char *p = "pv-attack: ";
    while (*p) buf[n++] = *p++;
    while (*name) buf[n++] = *name++;
    buf[n++] = ' '; buf[n++] = '-'; buf[n++] = '>'; buf[n++] = ' ';
    u32 v = rc < 0 ? (u32)-rc : (u32)rc;
    if (rc < 0) buf[n++] = '-';
    char digits[12];
    int k = 0;
    do { digits[k++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (k) buf[n++] = digits[--k];
    buf[n++] = '\n';
    buf[n] = 0;
    puts_(buf);
}

static u8 scratch[4096] __attribute__((aligned(4096)));
static u32 gdt_frame_page[1024] __attribute__((aligned(4096)));

static long mmu1(u32 ptr, u32 val)
{
    struct mmu_update u = { ptr, 0, val, 0 };
    return hc(1, (u32)&u, 1, 0, 0x7ff0, 0);
}

void attack_main(struct start_info *si)
{
    const u32 *p2m = (const u32 *)si->mfn_list;
    u32 l2_mfn = p2m[si->pt_base >> 12];
    u32 l2_ma = l2_mfn << 12;
    u32 pde0 = *(const u32 *)si->pt_base;               /* the L1 mapping [0, 4 MiB) */
    u32 l1_ma = pde0 & ~0xfffu;
    u32 va = (u32)scratch;
    u32 pte_ma = l1_ma + 4 * ((va >> 12) & 0x3ff);

    puts_("pv-attack: start\n");
    report("writable mapping of the L2", hc(14, va, l2_ma | 3, 2, 0, 0));
    report("writable mapping of an L1", mmu1(pte_ma, l1_ma | 3));
    report("mapping a frame it does not own", mmu1(pte_ma, (5u << 12) | 1));
    report("mapping beyond host memory", mmu1(pte_ma, 0xfffff000u | 1));
    report("PDE in the hypervisor's hole", mmu1(l2_ma + 4 * 1020, pde0));
    report("4 MiB page", mmu1(l2_ma + 4 * 600, (p2m[0x400] << 12) | 0x83));
    report("update of a frame it does not own", mmu1(5u << 12, 0));
    report("pin a writable-mapped frame", ({ u32 op[3] = { 0, p2m[va >> 12], 0 };
                                            hc(26, (u32)op, 1, 0, 0x7ff0, 0); }));
    /* Descriptor pages: DPL 0, a gate, and a frame still mapped writable. */
    u32 gva = (u32)gdt_frame_page;
    u32 gframe = p2m[gva >> 12];
    report("set_gdt on a writable frame", hc(2, (u32)&gframe, 8, 0, 0, 0));
    gdt_frame_page[2] = 0x0000ffff; gdt_frame_page[3] = 0x00cf9b00;      /* DPL 0 code */
    hc(14, gva, (gframe << 12) | 1, 2, 0, 0);                            /* now read-only */
    report("set_gdt with a DPL-0 code segment", hc(2, (u32)&gframe, 8, 0, 0, 0));
    report("update_descriptor DPL 0", hc(10, (gframe << 12) + 16, 0, 0x0000ffff, 0x00cf9b00, 0));
    report("update_descriptor interrupt gate", hc(10, (gframe << 12) + 16, 0, 0x00080000, 0x0000ee00, 0));
    report("update_descriptor call gate into the hole", hc(10, (gframe << 12) + 16, 0, 0x00081000, 0xfc00ec00, 0));
    report("update_descriptor TSS", hc(10, (gframe << 12) + 16, 0, 0x00000067, 0x00008900, 0));
    struct trap_info ti[2] = { { 14, 0, 0xe019, 0xfc001000 }, { 0, 0, 0, 0 } };
    report("trap handler in the hole", hc(0, (u32)ti, 0, 0, 0, 0));
    struct trap_info ti0[2] = { { 14, 0, 0xe018, 0x100000 }, { 0, 0, 0, 0 } };
    report("trap handler on ring 0", hc(0, (u32)ti0, 0, 0, 0, 0));
    report("callback on ring 0", hc(4, 0xe018, 0x100000, 0xe019, 0x100000, 0));
    report("stack on ring 0", hc(3, 0xe020, 0x1000, 0, 0, 0));
    /* Bad pointers and lengths. */
    report("console_io from the hole", hc(18, 0, 64, 0xfc000000u, 0, 0));
    report("console_io from unmapped memory", hc(18, 0, 64, 0x80000000u, 0, 0));
    report("console_io of 1 GiB", hc(18, 0, 1u << 30, va, 0, 0));
    report("mmu_update list in the hole", hc(1, 0xffc00000u, 1, 0, 0x7ff0, 0));
    report("mmu_update done-count into read-only memory", ({ struct mmu_update u = { pte_ma, 0, 0, 0 };
        (void)u; hc(1, 0xfc000000u, 1, si->pt_base, 0x7ff0, 0); }));
    report("mmu_update of 2^20 requests", hc(1, va, 1u << 20, 0, 0x7ff0, 0));
    report("set_trap_table from unmapped memory", hc(0, 0x90000000u, 0, 0, 0, 0));
    report("unknown hypercall", hc(99, 0, 0, 0, 0, 0));
    /* An event-channel flood: bind every VIRQ twice, send to ports that do not exist. */
    long bound = 0, refused = 0;
    for (u32 virq = 0; virq < 48; virq++) {
        u32 b[3] = { virq & 31, 0, 0 };
        long rc = hc(32, 1, (u32)b, 0, 0, 0);
        if (rc == 0) bound++; else refused++;
    }
    report("bind_virq accepted", bound);
    report("bind_virq refused", -refused);
    long bad = 0;
    for (u32 port = 0; port < 2048; port++) {
        if (port == si->console_evtchn || (port >= 2 && port < 2 + bound))
            continue;
        u32 p = port;
        if (hc(32, 4, (u32)&p, 0, 0, 0) == -22) bad++;
    }
    report("sends to unbound ports refused", bad);
    puts_("pv-attack: store into the hypervisor's hole\n");
    *(volatile u32 *)0xffc00000u = 0xdeadbeef;
    puts_("pv-attack: the store went through\n");
    u32 reason[2] = { 0, 0 };
    hc(29, 2, (u32)reason, 0, 0, 0);
}
