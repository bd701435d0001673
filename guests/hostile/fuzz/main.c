/* fuzz: run a random program the fuzzer hands over as a Multiboot module.
 *
 * The module is a header -- ring (0 or 3), IOPL, number of GDT descriptors,
 * paging on or off -- then that many 8-byte descriptors, which go into the
 * spare GDT slots, then the code.  The code is copied into a page of its
 * own, followed by a debug exit, and run at the given ring and IOPL.  The
 * first exception ends the run through the library's handler, which prints
 * it ("unexpected #GP err=... at cs:eip") and exits with status 3; whatever
 * the code does to the machine in between is its own business.  The fuzzer
 * compares what each technique makes of it with the bare PC.
 */
#include "hk.h"

struct mb_module { u32 start, end, string, reserved; };

static u8 code_page[8192] __attribute__((aligned(4096)));
static const u8 tail[] = { 0xb0, 0x00, 0xe6, 0xf4, 0xeb, 0xfe };   /* mov al,0; out 0xf4,al; jmp $ */
static void (*entry)(void) = (void (*)(void))code_page;

static void run_user(void) { entry(); }

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("fuzz", magic, mbi);
    const u32 *raw = (const u32 *)mbi;
    if (!(raw[0] & (1u << 3)) || raw[5] == 0) {
        hk_line("no module");
        tk_exit(2);
    }
    const struct mb_module *mod = (const struct mb_module *)raw[6];
    const u8 *p = (const u8 *)mod->start;
    u32 size = mod->end - mod->start;
    if (size < 4) {
        hk_line("module too short");
        tk_exit(2);
    }
    u32 ring = p[0] & 3 ? 3 : 0, iopl = p[1] & 3, ndesc = p[2] % (HK_GDT_SLOTS - HK_SPARE), paging = p[3] & 1;
    u32 off = 4;
    for (u32 i = 0; i < ndesc && off + 8 <= size; i++, off += 8) {
        const u32 *d = (const u32 *)(p + off);
        hk_gdt[HK_SPARE + i] = (struct seg_desc){ d[0], d[1] };
    }
    u32 n = size - off;
    if (n > sizeof code_page - sizeof tail)
        n = sizeof code_page - sizeof tail;
    for (u32 i = 0; i < n; i++)
        code_page[i] = p[off + i];
    for (u32 i = 0; i < sizeof tail; i++)
        code_page[n + i] = tail[i];
    if (paging)
        hk_paging_on();
    hk_prefix();
    puts("ring ");
    putdec(ring);
    puts(" IOPL ");
    putdec(iopl);
    puts(" descriptors ");
    putdec(ndesc);
    puts(paging ? " paging\n" : "\n");
    if (ring == 3) {
        /* hk_user returns with the vector of the first fault: print it and stop there. */
        int v = hk_user(run_user, 0x2 | (iopl << 12));
        hk_prefix();
        puts("ring 3 ended: ");
        hk_put_fault(v == 0x80 ? -1 : v);
        putc('\n');
        tk_exit(4);
    }
    __asm__ volatile("pushl %0\n\tpopfl" : : "r"(0x2 | (iopl << 12)));
    entry();
    hk_done();
}
