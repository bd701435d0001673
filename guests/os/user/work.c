/* work.c: the user-mode workloads.  Each is a loop whose checksum depends
 * only on the iteration count -- never on timing, pids of other runs, or
 * where the timer happened to preempt -- so two runs on any correct
 * platform print the same result line. */
#include "ulib.h"

#define PGSIZE_USER 4096

/* ---- compute: CRC-32 (table driven) over pseudo-random data ---- */

#define COMPUTE_BUF (64 * 1024)
static u8 *compute_buf;     /* from the heap, so fork() has less to copy */
static u32 crc_table[256];

/* n rounds; each fills 64 KiB from a xorshift generator and CRCs it, so
 * the default 64 rounds stream 4 MiB through the CPU.  Pure ring 3: no
 * system calls inside the loop. */
u32 w_compute(u32 n)
{
    if (!compute_buf) {
        compute_buf = sbrk(COMPUTE_BUF);
        if (compute_buf == (void *)-1)
            fail("compute: sbrk failed");
    }
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & -(c & 1));
        crc_table[i] = c;
    }
    u32 x = 0x12345678, crc = CRC32_INIT;
    for (u32 r = 0; r < n; r++) {
        u32 *w = (u32 *)compute_buf;
        for (u32 i = 0; i < COMPUTE_BUF / 4; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            w[i] = x;
        }
        for (u32 i = 0; i < COMPUTE_BUF; i++)
            crc = (crc >> 8) ^ crc_table[(crc ^ compute_buf[i]) & 0xff];
    }
    return crc32_final(crc);
}

/* ---- syscall: the null system call ---- */
u32 w_syscall(u32 n)
{
    u32 crc = CRC32_INIT;
    int pid = getpid();
    for (u32 i = 0; i < n; i++)
        if (getpid() != pid)
            fail("syscall: getpid changed");
    crc = fold(crc, n);
    return crc32_final(fold(crc, (u32)pid));
}

/* ---- ctxswitch: two processes yield to each other ---- */
u32 w_ctxswitch(u32 n)
{
    int pid = fork();
    if (pid < 0)
        fail("ctxswitch: fork failed");
    u32 count = 0;
    for (u32 i = 0; i < n; i++) {
        yield();
        count++;
    }
    if (pid == 0)
        exit((int)count);
    int status = -1;
    if (wait(pid, &status) != pid || (u32)status != n)
        fail("ctxswitch: child status %d", status);
    u32 crc = fold(CRC32_INIT, count);
    return crc32_final(fold(crc, (u32)status));
}

/* ---- pgfault: every iteration touches a page that is not there ---- */
u32 w_pgfault(u32 n)
{
    u32 crc = CRC32_INIT;
    for (u32 i = 0; i < n; i++) {
        volatile u32 *p = sbrk(PGSIZE_USER);
        if (p == (void *)-1)
            fail("pgfault: sbrk failed");
        u32 slot = i & 1023;
        if (p[slot] != 0)            /* demand-zero: first read faults */
            fail("pgfault: fresh page not zero");
        p[slot] = i * 2654435761u;
        crc = fold(crc, p[slot] ^ slot);
        sbrk(-(i32)PGSIZE_USER);     /* unmap and free: the next touch faults again */
    }
    return crc32_final(crc);
}

/* ---- ptemod: map and unmap one page (a PTE write and an INVLPG each) ---- */
u32 w_ptemod(u32 n)
{
    u32 crc = CRC32_INIT;
    volatile u32 *p = (volatile u32 *)USER_MAP_BASE;
    for (u32 i = 0; i < n; i++) {
        if (map(USER_MAP_BASE) < 0)
            fail("ptemod: map failed");
        if (p[i & 1023] != 0)
            fail("ptemod: mapped page not zero");
        p[i & 1023] = i ^ 0x5a5a5a5a;
        crc = fold(crc, p[i & 1023]);
        if (unmap(USER_MAP_BASE) < 0)
            fail("ptemod: unmap failed");
    }
    if (unmap(USER_MAP_BASE) != -1)
        fail("ptemod: unmapping twice succeeded");
    return crc32_final(crc);
}

/* ---- forkwait: create a process that exits at once, wait for it ---- */
u32 w_forkwait(u32 n)
{
    u32 crc = CRC32_INIT;
    for (u32 i = 0; i < n; i++) {
        int pid = fork();
        if (pid < 0)
            fail("forkwait: fork failed at %u", i);
        if (pid == 0)
            exit((int)(i & 0xff));
        int status = -1;
        if (wait(pid, &status) != pid || status != (int)(i & 0xff))
            fail("forkwait: child %u exited with %d", i, status);
        crc = fold(crc, (u32)status);
    }
    return crc32_final(crc);
}

/* ---- divzero: divide by zero, the kernel catches it, we resume ---- */
u32 w_divzero(u32 n)
{
    if (catch(divzero_handler) < 0)
        fail("divzero: catch failed");
    u32 start = divzero_caught;
    u32 crc = CRC32_INIT;
    for (u32 i = 0; i < n; i++) {
        u32 q = i + 7;
        /* "divl %ecx" is the 2-byte F7 F1 that divzero_handler skips; a
         * faulting DIV leaves EAX and EDX unchanged. */
        __asm__ volatile("divl %%ecx" : "+a"(q) : "d"(0), "c"(0) : "cc");
        crc = fold(crc, q);
    }
    if (divzero_caught - start != n)
        fail("divzero: %u faults caught, expected %u", divzero_caught - start, n);
    catch(0);
    return crc32_final(fold(crc, n));
}

/* ---- protect: what ring 3 must not be able to do ---- */

/* Each check runs in a fresh child that should be killed by the kernel;
 * its exit status is 128 + the vector that killed it. */
static void bad_read_kernel(void) { (void)*(volatile u32 *)0x00100000; }
static void bad_write_null(void) { *(volatile u32 *)0 = 1; }
static void bad_cli(void) { __asm__ volatile("cli"); }
static void bad_out(void) { __asm__ volatile("outb %%al, $0x80" : : "a"(0)); }
static void bad_hlt(void) { __asm__ volatile("hlt"); }
static void bad_cr3(void) { u32 v; __asm__ volatile("movl %%cr3, %0" : "=r"(v)); }
static void bad_int(void) { __asm__ volatile("int $0x81"); }   /* DPL-0 gate */
static void bad_ud2(void) { __asm__ volatile("ud2"); }
static void bad_div(void) { __asm__ volatile("divl %%ecx" : : "a"(1), "d"(0), "c"(0)); }

static const struct { const char *name; void (*run)(void); int status; } checks[] = {
    { "read-kernel-memory", bad_read_kernel, 128 + 14 },
    { "write-page-zero", bad_write_null, 128 + 14 },
    { "cli", bad_cli, 128 + 13 },
    { "out", bad_out, 128 + 13 },
    { "hlt", bad_hlt, 128 + 13 },
    { "mov-from-cr3", bad_cr3, 128 + 13 },
    { "int-kernel-gate", bad_int, 128 + 13 },
    { "ud2", bad_ud2, 128 + 6 },
    { "divide-uncaught", bad_div, 128 + 0 },
};

u32 w_protect(u32 n)
{
    u32 crc = CRC32_INIT;
    for (u32 i = 0; i < n; i++) {
        for (u32 k = 0; k < ARRAY_SIZE(checks); k++) {
            int pid = fork();
            if (pid < 0)
                fail("protect: fork failed");
            if (pid == 0) {
                checks[k].run();
                exit(0);     /* not reached if the kernel stopped it */
            }
            int status = -1;
            wait(pid, &status);
            if (i == 0)
                printf("protect %s status=%d %s\n", checks[k].name, status,
                       status == checks[k].status ? "trapped" : "NOT-TRAPPED");
            if (status != checks[k].status)
                fail("protect: %s gave status %d, expected %d", checks[k].name,
                     status, checks[k].status);
            crc = fold(crc, (u32)status);
        }
    }
    return crc32_final(crc);
}

/* ---- mixed: several processes at once, preempted by the timer ---- */

static const struct { const char *name; u32 (*run)(u32); u32 scale; } workers[] = {
    { "compute", w_compute, 1 },
    { "syscall", w_syscall, 500 },
    { "pgfault", w_pgfault, 50 },
    { "ptemod", w_ptemod, 50 },
    { "forkwait", w_forkwait, 4 },
    { "divzero", w_divzero, 50 },
};

/* Every worker runs concurrently and reports its checksum as its exit
 * status; the parent waits for them in a fixed order and alone prints, so
 * the output does not depend on how the timer interleaved them. */
u32 w_mixed(u32 n)
{
    int pids[ARRAY_SIZE(workers)];
    for (u32 k = 0; k < ARRAY_SIZE(workers); k++) {
        pids[k] = fork();
        if (pids[k] < 0)
            fail("mixed: fork failed");
        if (pids[k] == 0)
            exit((int)workers[k].run(n * workers[k].scale));
    }
    /* The parent computes too, competing with the workers for the CPU. */
    u32 crc = fold(CRC32_INIT, w_compute(n));
    for (u32 k = 0; k < ARRAY_SIZE(workers); k++) {
        int status;
        if (wait(pids[k], &status) != pids[k])
            fail("mixed: wait failed");
        printf("mixed %s iterations=%u checksum=0x%08x\n", workers[k].name,
               n * workers[k].scale, (u32)status);
        crc = fold(crc, (u32)status);
    }
    u32 t = time();   /* ticks are not printed (they depend on speed) */
    (void)t;
    return crc32_final(crc);
}
