/* selftest.c: kernel unit tests run inside the guest (workload=selftest).
 *
 * Each test prints "selftest NAME ok" or panics with what went wrong (so a
 * failure ends the run with EXIT_PANIC).  They leave the kernel as they
 * found it: every page allocated is freed and checked for. */
#include "kernel.h"
#include "cpuops.h"
#include "syscall.h"

#define CHECK(c) do { if (!(c)) panic("selftest %s: check failed: %s (line %d)", name, #c, __LINE__); } while (0)

static u32 crc;

static void passed(const char *name)
{
    char buf[64];
    int n = fmt(buf, sizeof buf, "selftest %s ok\n", name);
    crc = crc32_update(crc, buf, (u32)n);
    kprintf("%s", buf);
}

static void test_kalloc(void)
{
    const char *name = "kalloc";
    u32 before = kalloc_free_pages();
    u8 *a = kalloc(), *b = kalloc(), *c = kalloc();
    CHECK(a && b && c);
    CHECK(a != b && b != c && a != c);
    CHECK((u32)a % PGSIZE == 0 && (u32)b % PGSIZE == 0 && (u32)c % PGSIZE == 0);
    CHECK(kalloc_free_pages() == before - 3);
    for (u32 i = 0; i < PGSIZE; i++)
        CHECK(a[i] == 0);   /* handed out zeroed */
    memset(b, 0xab, PGSIZE);
    kfree(b);
    u8 *d = kalloc();
    CHECK(d == b);          /* LIFO: the page freed last comes back first */
    CHECK(d[0] == 0 && d[PGSIZE - 1] == 0);   /* and zeroed again */
    kfree(a);
    kfree(c);
    kfree(d);
    CHECK(kalloc_free_pages() == before);
    passed(name);
}

static void test_vm(void)
{
    const char *name = "vm";
    u32 before = kalloc_free_pages();
    pde_t *pd = vm_new_pgdir();
    CHECK(pd);
    /* The kernel half is shared: same PDEs as the kernel's directory. */
    CHECK(pd[PDX(0x100000)] == kernel_pgdir[PDX(0x100000)]);
    CHECK(!(pd[PDX(USER_BASE)] & PG_P));
    u8 *page = kalloc();
    CHECK(vm_map(pd, USER_BASE + 0x5000, page, PG_W | PG_U) == 0);
    pte_t *pte = vm_lookup(pd, USER_BASE + 0x5000);
    CHECK(pte && PTE_ADDR(*pte) == (u32)page && (*pte & (PG_P | PG_W | PG_U)) == (PG_P | PG_W | PG_U));
    CHECK(vm_lookup(pd, USER_BASE + 0x6000) && !(*vm_lookup(pd, USER_BASE + 0x6000) & PG_P));
    CHECK(vm_unmap(pd, USER_BASE + 0x5000) == page);
    CHECK(vm_unmap(pd, USER_BASE + 0x5000) == NULL);
    kfree(page);
    CHECK(vm_map(pd, USER_BASE + 0x7000, kalloc(), PG_U) == 0);
    vm_free_pgdir(pd);      /* frees the mapped page, the table, the directory */
    CHECK(kalloc_free_pages() == before);
    passed(name);
}

static void test_scheduler_order(void)
{
    const char *name = "sched-order";
    struct proc *a = proc_alloc(), *b = proc_alloc(), *c = proc_alloc();
    CHECK(a && b && c);
    CHECK(b->pid == a->pid + 1 && c->pid == b->pid + 1);
    int ia = (int)(a - procs), ib = (int)(b - procs), ic = (int)(c - procs);
    a->state = b->state = c->state = RUNNABLE;
    /* Round robin: from any slot, the next runnable in table order. */
    CHECK(proc_pick_next(NPROC - 1) == ia);
    CHECK(proc_pick_next(ia) == ib);
    CHECK(proc_pick_next(ib) == ic);
    CHECK(proc_pick_next(ic) == ia);
    b->state = SLEEPING;    /* a sleeping process is skipped */
    CHECK(proc_pick_next(ia) == ic);
    a->state = c->state = ZOMBIE;
    CHECK(proc_pick_next(ia) == -1);
    proc_free(a);
    proc_free(b);
    proc_free(c);
    passed(name);
}

static void test_elf(void)
{
    const char *name = "elf";
    u32 before = kalloc_free_pages();
    pde_t *pd = vm_new_pgdir();
    u32 entry = 0, end = 0;
    static const u8 junk[64] = { 0x7f, 'E', 'L', 'F', 2 /* 64-bit */ };
    CHECK(elf_load(pd, junk, sizeof junk, &entry, &end) < 0);
    CHECK(elf_load(pd, init_elf_start, 10, &entry, &end) < 0);
    CHECK(elf_load(pd, init_elf_start, (u32)(init_elf_end - init_elf_start), &entry, &end) == 0);
    CHECK(entry >= USER_BASE && entry < end && end < USER_HEAP_MAX);
    vm_free_pgdir(pd);
    CHECK(kalloc_free_pages() == before);
    passed(name);
}

static void test_cmdline(void)
{
    const char *name = "cmdline";
    struct cmdline c;
    CHECK(cmdline_parse("/path/to/kernel workload=ptemod iterations=42", &c) == 0);
    CHECK(strcmp(c.workload, "ptemod") == 0 && c.iterations == 42 && c.iterations_given);
    CHECK(cmdline_parse("", &c) == 0 && strcmp(c.workload, "mixed") == 0 && !c.iterations_given);
    CHECK(cmdline_parse("iterations=0", &c) < 0);
    CHECK(cmdline_parse("iterations=12x", &c) < 0);
    CHECK(cmdline_parse("iterations=1234567890", &c) < 0);
    CHECK(cmdline_parse("workload=", &c) < 0);
    CHECK(cmdline_parse("BOOT_IMAGE=x  workload=io", &c) == 0 && strcmp(c.workload, "io") == 0);
    passed(name);
}

static void test_fmt(void)
{
    const char *name = "fmt";
    char buf[64];
    fmt(buf, sizeof buf, "%d %u %x %08x %s %c%%", -42, 42u, 0xbeefu, 0x1234u, "s", 'c');
    CHECK(strcmp(buf, "-42 42 beef 00001234 s c%") == 0);
    CHECK(fmt(buf, 4, "%s", "truncate") == 8 && strcmp(buf, "tru") == 0);
    CHECK(crc32_final(crc32_update(CRC32_INIT, "123456789", 9)) == 0xcbf43926u);
    passed(name);
}

static void test_timer(void)
{
    const char *name = "timer";
    /* The PIT must be ticking: wait (halting) for two ticks. */
    u32 start = ticks;
    u32 saved = cpu_irq_save();
    while (ticks < start + 2)
        cpu_wait_for_interrupt();
    cpu_irq_restore(saved);
    CHECK(ticks >= start + 2);
    passed(name);
}

u32 selftest_run(u32 iterations)
{
    u32 first = 0;
    for (u32 i = 0; i < iterations; i++) {
        crc = CRC32_INIT;
        test_kalloc();
        test_vm();
        test_scheduler_order();
        test_elf();
        test_cmdline();
        test_fmt();
        test_timer();
        if (i == 0)
            first = crc;
    }
    return crc32_final(first);
}
