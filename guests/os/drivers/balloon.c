/* balloon.c: the balloon driver, after VMware ESX Server's (Waldspurger,
 * OSDI 2002, section 3).  The monitor asks for a balloon size (the target,
 * in pages) through a small I/O-port device; the driver inflates by taking
 * pages from the kernel's own allocator and telling the monitor their
 * frame numbers (the monitor then gives their host frames back to the
 * pool), and deflates by giving pages back to the allocator after telling
 * the monitor.  The guest's own allocator thus feels the pressure: its
 * free-page count drops by what the balloon holds.
 *
 * The device (trapvisor/machine/devices/balloon.py), byte ports from
 * BALLOON_BASE: 0-3 an ID ("BALN"), 4-7 the target (little endian), 8-11
 * a frame number to stage, 12 a command (1 inflate, 2 deflate the staged
 * frame) whose read-back is 1 when the monitor accepted it.  On a PC
 * without the device the ID reads as all ones and the driver stays idle.
 *
 * The workload "balloon" polls the device once per timer tick for
 * `iterations` ticks and prints what it holds and what the allocator has
 * left; at the end it deflates completely. */
#include "../kernel/kernel.h"
#include "../kernel/cpuops.h"

#define BALLOON_BASE    0x5b0
#define BALLOON_ID      0
#define BALLOON_TARGET  4
#define BALLOON_PFN     8
#define BALLOON_CMD     12
#define CMD_INFLATE     1
#define CMD_DEFLATE     2
#define BALLOON_MAX     16384          /* 64 MiB: all the memory tvos uses */
#define PER_LIST        1023           /* frames one list page records */

/* What the balloon holds, in list pages taken from the allocator (kept by
 * the guest: the monitor is never told of them).  Nothing static beyond two
 * words, so the kernel image, and every other workload, is unchanged. */
struct held_list { struct held_list *next; u32 pa[PER_LIST]; };
static struct held_list *lists;
static u32 nheld;

static int held_push(u32 pa)
{
    if (nheld % PER_LIST == 0) {
        struct held_list *l = kalloc();
        if (!l)
            return 0;
        l->next = lists;
        lists = l;
    }
    lists->pa[nheld++ % PER_LIST] = pa;
    return 1;
}

static u32 held_pop(void)
{
    u32 pa = lists->pa[--nheld % PER_LIST];
    if (nheld % PER_LIST == 0) {
        struct held_list *l = lists;
        lists = l->next;
        kfree(l);
    }
    return pa;
}

static u32 inl_bytes(u16 port)
{
    u32 v = 0;
    for (int i = 0; i < 4; i++)
        v |= (u32)cpu_inb(port + i) << (8 * i);
    return v;
}

static int balloon_present(void)
{
    return inl_bytes(BALLOON_BASE + BALLOON_ID) == 0x4e4c4142;   /* "BALN" */
}

static int balloon_command(u32 pa, u8 cmd)
{
    u32 pfn = pa >> 12;
    for (int i = 0; i < 4; i++)
        cpu_outb(BALLOON_BASE + BALLOON_PFN + i, (u8)(pfn >> (8 * i)));
    cpu_outb(BALLOON_BASE + BALLOON_CMD, cmd);
    return cpu_inb(BALLOON_BASE + BALLOON_CMD) == 1;
}

/* Move toward the monitor's target; returns the target. */
static u32 balloon_poll(void)
{
    u32 target = inl_bytes(BALLOON_BASE + BALLOON_TARGET);
    if (target > BALLOON_MAX)
        target = BALLOON_MAX;
    while (nheld < target) {
        void *page = kalloc();
        if (!page)
            break;                      /* the guest has nothing left to give */
        if (!held_push((u32)page) || !balloon_command((u32)page, CMD_INFLATE)) {
            if (nheld && lists->pa[(nheld - 1) % PER_LIST] == (u32)page)
                held_pop();
            kfree(page);
            break;
        }
    }
    while (nheld > target) {
        u32 pa = held_pop();
        balloon_command(pa, CMD_DEFLATE);
        kfree((void *)pa);             /* kalloc zeroes it again when it is handed out */
    }
    return target;
}

u32 kwork_balloon(u32 iterations)
{
    if (!balloon_present()) {
        kprintf("balloon: no balloon device, free pages %u\n", kalloc_free_pages());
        return kalloc_free_pages();
    }
    kprintf("balloon: free pages %u\n", kalloc_free_pages());
    for (u32 i = 0; i < iterations; i++) {
        u32 t0 = ticks;
        while (ticks == t0) {
            cpu_wait_for_interrupt();
            cpu_irq_enable();
        }
        u32 target = balloon_poll();
        kprintf("balloon: tick %u target %u held %u free pages %u\n", i, target, nheld,
                kalloc_free_pages());
    }
    while (nheld) {
        u32 pa = held_pop();
        balloon_command(pa, CMD_DEFLATE);
        kfree((void *)pa);
    }
    kprintf("balloon: deflated, free pages %u\n", kalloc_free_pages());
    return kalloc_free_pages();
}
