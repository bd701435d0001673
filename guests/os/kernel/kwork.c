/* kwork.c: workloads that run in the kernel (ring 0) with the timer on.
 * Each returns a checksum that depends only on the iteration count. */
#include "kernel.h"
#include "cpuops.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71
#define CMOS_SCRATCH 0x40   /* battery-backed RAM; nothing else uses it */
#define POST_PORT  0x80

/* io: port I/O against devices every PC has.  Each iteration writes a
 * byte into CMOS RAM through the index/data pair, reads it back, and
 * writes the result to the POST diagnostic port 0x80: five IN/OUTs. */
u32 kwork_io(u32 iterations)
{
    u32 crc = CRC32_INIT;
    for (u32 i = 0; i < iterations; i++) {
        u8 v = (u8)(i * 37 + 11);
        cpu_outb(CMOS_INDEX, CMOS_SCRATCH);
        cpu_outb(CMOS_DATA, v);
        cpu_outb(CMOS_INDEX, CMOS_SCRATCH);
        u8 back = cpu_inb(CMOS_DATA);
        cpu_outb(POST_PORT, back);
        crc = crc32_update(crc, &back, 1);
    }
    return crc32_final(crc);
}

/* crwrite: control-register writes.  Each iteration flips CR0.TS (the bit
 * a kernel sets and clears for lazy FPU switching; tvos uses no FPU, so it
 * is harmless) and reads CR0 back. */
u32 kwork_crwrite(u32 iterations)
{
    u32 base = cpu_read_cr0() & ~CR0_TS;
    u32 crc = CRC32_INIT;
    for (u32 i = 0; i < iterations; i++) {
        cpu_write_cr0(base | ((i & 1) ? 0 : CR0_TS));
        u32 back = cpu_read_cr0();
        u8 ts = (back & CR0_TS) ? 1 : 0;
        if ((back & ~CR0_TS) != base)
            panic("crwrite: CR0 read back 0x%08x, expected 0x%08x", back, base);
        crc = crc32_update(crc, &ts, 1);
    }
    cpu_write_cr0(base);
    return crc32_final(crc);
}

/* panic: exercise the panic path on purpose.  A kernel write to virtual
 * page 0 (left unmapped by vm_init) page-faults in ring 0, which trap()
 * reports through panic(): the run ends with EXIT_PANIC. */
u32 kwork_panic(u32 iterations)
{
    (void)iterations;
    *(volatile u32 *)0 = 0xdead;
    return 0;
}
