/* host-ports: reach for I/O ports that are not the VM's.
 *
 * The guest kernel owns the I/O space of its (virtual) PC: ports no device
 * claims read all ones and swallow writes; the PCI configuration ports
 * answer as the chipset does ([platform]: the simulated PC has no PCI);
 * port 0x92 and the keyboard controller can reset the machine -- the VM's
 * machine, never the host.  IOPL decides whether ring 3 may use IN/OUT:
 * POPF at CPL 0 can set it, and so can IRET.  Under trap-and-emulate on
 * the standard CPU those two run at ring 1 without trapping and silently
 * keep the host's IOPL 0 ([sensitive]); no path gives the guest the host's
 * ports.
 */
#include "hk.h"

static void show_in(u16 port, int size)
{
    u32 v;
    if (size == 4)
        __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    else
        v = inb(port);
    hk_prefix();
    if (port == 0xcfc || port == 0xcf8)
        puts("[platform] ");
    puts("in ");
    puthex(port, 4);
    puts(" = ");
    puthex(v, size * 2);
    putc('\n');
}

static void user_in_61(void)
{
    (void)inb(0x61);
    hk_user_return();
}

static void user_out_80(void)
{
    outb(0x80, 0x42);
    hk_user_return();
}

static void user_cli_sti(void)
{
    __asm__ volatile("cli\n\tsti");
    hk_user_return();
}

static void user_popf_iopl(void)
{
    /* From ring 3: try to raise IOPL with POPF, then use a port. */
    __asm__ volatile("pushfl\n\torl $0x3000, (%%esp)\n\tpopfl" ::: "memory", "cc");
    (void)inb(0x61);
    hk_user_return();
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("host-ports", magic, mbi);

    /* 1. Ports no device of the VM claims. */
    show_in(0x300, 1);
    show_in(0x2f8, 1);
    show_in(0x378, 1);
    outb(0x300, 0x55);
    outb(0x2f8, 0x55);
    show_in(0x300, 1);
    /* 2. Host-owned ports: PCI configuration, port A. */
    __asm__ volatile("outl %0, %1" : : "a"(0x80000000u), "Nd"(0xcf8));
    show_in(0xcf8, 4);
    show_in(0xcfc, 4);
    show_in(0x92, 1);

    /* 3. IOPL from ring 0 with POPF. */
    u32 fl;
    __asm__ volatile("pushfl\n\torl $0x3000, (%%esp)\n\tpopfl\n\tpushfl\n\tpopl %0" : "=r"(fl) : : "memory", "cc");
    hk_prefix();
    puts("[sensitive] popf with iopl=3 at cpl 0, pushf reads iopl ");
    putdec((fl >> 12) & 3);
    putc('\n');
    __asm__ volatile("pushfl\n\tandl $~0x3000, (%%esp)\n\tpopfl" ::: "memory", "cc");

    /* 4. Ring 3. */
    hk_report("ring 3, iopl 0: in 0x61", hk_user(user_in_61, 0));
    hk_report("ring 3, iopl 0: out 0x80", hk_user(user_out_80, 0));
    hk_report("ring 3, iopl 0: cli", hk_user(user_cli_sti, 0));
    hk_report("ring 3, iopl 0: popf iopl=3, then in 0x61", hk_user(user_popf_iopl, 0));
    hk_report("[sensitive] ring 3, iopl 3 (set by iret): in 0x61", hk_user(user_in_61, EFLAGS_IOPL3));
    hk_report("[sensitive] ring 3, iopl 3 (set by iret): cli; sti", hk_user(user_cli_sti, EFLAGS_IOPL3));

    u32 reset = cmdline_uint(mbi, "reset", 64);
    if (reset == 64) {
        hk_line("pulsing the reset line: out 0x64, 0xfe");
        outb(0x64, 0xfe);
    } else if (reset == 92) {
        hk_line("fast reset: out 0x92, 0x01");
        outb(0x92, 0x03);
    } else {
        hk_done();
    }
    for (int k = 0; k < 1000; k++)
        __asm__ volatile("pause");
    hk_line("still running after the reset");
    tk_exit(1);
}
