/* main.c: a paravirtual block-device front end for technique pv.
 *
 * Sets up a grant table (GNTTABOP_setup_table), maps it, and talks to the
 * block backend over the blkif ring the domain builder gave it (start_info's
 * trapvisor extension: ring frame, event channel, disk size).  It reads
 * sectors 0-7 into a granted page and prints their FNV-1a hash, writes a
 * pattern to sectors 16-23, then makes requests the backend must refuse.
 * tests/vmm/techniques/test_pv_blkif.py checks the hash and the write
 * against the disk image file, and each refusal. */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

struct start_info {
    char magic[32];
    u32 nr_pages, shared_info, flags, store_mfn, store_evtchn, console_mfn, console_evtchn;
    u32 pt_base, nr_pt_frames, mfn_list, mod_start, mod_len;
    char cmd_line[1024];
    u32 first_p2m_pfn, nr_p2m_frames;
    u32 blk_mfn, blk_evtchn, blk_sectors;          /* trapvisor's extension */
};
struct grant_entry { u16 flags, domid; u32 frame; };
struct __attribute__((packed)) blkif_request {
    u8 operation, nr_segments; u16 handle; u64 id; u64 sector;
    struct { u32 gref; u8 first_sect, last_sect; u16 pad; } seg[11];
};
struct __attribute__((packed)) blkif_response { u64 id; u8 operation; u8 pad; short status; };

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

static void report(const char *name, u32 v, int hex)
{
    char buf[96];
    u32 n = 0;
    const char *p = "pv-blk: ";
    while (*p) buf[n++] = *p++;
    while (*name) buf[n++] = *name++;
    buf[n++] = ' ';
    int neg = !hex && (int)v < 0;
    if (neg) { buf[n++] = '-'; v = -v; }
    char d[12];
    int k = 0;
    u32 base = hex ? 16 : 10;
    if (hex) { buf[n++] = '0'; buf[n++] = 'x'; }
    do { d[k++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    while (k) buf[n++] = d[--k];
    buf[n++] = '\n';
    buf[n] = 0;
    puts_(buf);
}

static struct grant_entry gnttab[512] __attribute__((aligned(4096)));
static u8 data[4096] __attribute__((aligned(4096)));
static const u32 *p2m;
static volatile u32 *ring;
static u32 port, req_prod;

static short request(u8 op, u8 nseg, u64 sector, u32 gref, u8 first, u8 last)
{
    struct blkif_request *r = (struct blkif_request *)((u8 *)ring + 64 + 108 * (req_prod % 32));
    r->operation = op;
    r->nr_segments = nseg;
    r->handle = 0;
    r->id = 1000 + req_prod;
    r->sector = sector;
    for (int i = 0; i < 11; i++) {
        r->seg[i].gref = gref;
        r->seg[i].first_sect = first;
        r->seg[i].last_sect = last;
    }
    req_prod++;
    __asm__ volatile("" ::: "memory");
    ring[0] = req_prod;
    u32 p = port;
    hc(32, 4, (u32)&p, 0, 0, 0);              /* EVTCHNOP_send: the backend runs */
    if (ring[2] != req_prod)
        return 99;                            /* no response */
    struct blkif_response *rsp = (struct blkif_response *)r;
    return rsp->id == 1000 + req_prod - 1 ? rsp->status : 98;
}

static void grant(u32 ref, u16 flags, u16 domid, u32 frame)
{
    gnttab[ref].frame = frame;
    gnttab[ref].domid = domid;
    __asm__ volatile("" ::: "memory");
    gnttab[ref].flags = flags;
}

void blk_main(struct start_info *si)
{
    p2m = (const u32 *)si->mfn_list;
    const u32 *m2p = (const u32 *)0xfc000000u;
    if (!si->blk_evtchn) {
        puts_("pv-blk: no block device\n");
        u32 reason[2] = { 3, 1 };
        hc(29, 2, (u32)reason, 0, 0, 0);
    }
    ring = (volatile u32 *)(m2p[si->blk_mfn] << 12);
    port = si->blk_evtchn;
    report("sectors", si->blk_sectors, 0);

    u32 frames[1];
    struct { u16 dom, pad; u32 nr_frames; short status; u16 pad2; u32 frame_list; } st =
        { 0x7ff0, 0, 1, 0, 0, (u32)frames };
    hc(20, 2, (u32)&st, 1, 0, 0);              /* GNTTABOP_setup_table */
    report("setup_table status", (u32)(int)st.status, 0);
    hc(14, (u32)gnttab, frames[0] << 12 | 3, 2, 0, 0);   /* map it over our own page */

    u32 mfn = p2m[(u32)data >> 12];
    grant(1, 1, 0, mfn);                        /* permit, read-write, to domain 0 */
    report("read", (u32)(int)request(0, 1, 0, 1, 0, 7), 0);
    u32 h = 2166136261u;
    for (u32 i = 0; i < 4096; i++)
        h = (h ^ data[i]) * 16777619u;
    report("fnv", h, 1);
    for (u32 i = 0; i < 4096; i++)
        data[i] = (u8)(i * 7 + 3);
    grant(2, 1 | 4, 0, mfn);                    /* read-only: enough for a device write */
    report("write", (u32)(int)request(1, 1, 16, 2, 0, 7), 0);

    report("read into a read-only grant", (u32)(int)request(0, 1, 0, 2, 0, 7), 0);
    report("grant reference outside the table", (u32)(int)request(0, 1, 0, 100000, 0, 7), 0);
    grant(3, 1, 0, 5);
    report("grant of a frame it does not own", (u32)(int)request(0, 1, 0, 3, 0, 7), 0);
    grant(4, 1, 7, mfn);
    report("grant to another domain", (u32)(int)request(0, 1, 0, 4, 0, 7), 0);
    grant(5, 0, 0, mfn);
    report("entry without permit_access", (u32)(int)request(0, 1, 0, 5, 0, 7), 0);
    grant(6, 1, 0, p2m[si->pt_base >> 12]);
    report("read into its page directory", (u32)(int)request(0, 1, 0, 6, 0, 7), 0);
    report("12 segments", (u32)(int)request(0, 12, 0, 1, 0, 7), 0);
    report("sector past the disk", (u32)(int)request(0, 1, si->blk_sectors, 1, 0, 7), 0);
    report("last_sect 8", (u32)(int)request(0, 1, 0, 1, 0, 8), 0);
    report("unknown operation", (u32)(int)request(9, 1, 0, 1, 0, 7), 0);
    u32 reason[2] = { 0, 0 };
    hc(29, 2, (u32)reason, 0, 0, 0);
}
