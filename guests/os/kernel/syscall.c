/* syscall.c: the system calls (numbers and ABI in include/syscall.h).
 * Each handler checks every user pointer with vm_user_range_ok() before
 * touching it; the kernel never faults on user memory. */
#include "kernel.h"
#include "cpuops.h"
#include "syscall.h"

static int sys_write(struct trapframe *tf)
{
    u32 fd = tf->ebx, buf = tf->ecx, len = tf->edx;
    if (fd != 1 && fd != 2)
        return -1;
    if (!vm_user_range_ok(buf, len))
        return -1;
    console_write((const char *)buf, len);
    return (int)len;
}

static int sys_exit(struct trapframe *tf)
{
    proc_exit((int)tf->ebx);
}

static int sys_getpid(struct trapframe *tf)
{
    (void)tf;
    return current->pid;
}

static int sys_yield(struct trapframe *tf)
{
    (void)tf;
    proc_yield();
    return 0;
}

static int sys_fork(struct trapframe *tf)
{
    (void)tf;
    return proc_fork();
}

static int sys_wait(struct trapframe *tf)
{
    int pid = (int)tf->ebx, status = 0;
    u32 status_ptr = tf->ecx;
    if (status_ptr && !vm_user_range_ok(status_ptr, 4))
        return -1;
    int r = proc_wait(pid, &status);
    if (r > 0 && status_ptr)
        *(int *)status_ptr = status;
    return r;
}

/* Growing the break only moves it: the pages appear on first touch
 * (vm_user_fault).  Shrinking unmaps and frees what was touched. */
static int sys_sbrk(struct trapframe *tf)
{
    i32 delta = (i32)tf->ebx;
    u32 old = current->brk;
    u32 new = old + (u32)delta;
    if (delta > 0 && (new < old || new > USER_HEAP_MAX))
        return -1;
    if (delta < 0 && (new > old || new < current->heap_start))
        return -1;
    if (delta < 0)
        for (u32 va = PGROUNDUP(new); va < PGROUNDUP(old); va += PGSIZE) {
            void *page = vm_unmap(current->pgdir, va);
            if (page)
                kfree(page);
        }
    current->brk = new;
    return (int)old;
}

static int map_area_ok(u32 va)
{
    return va % PGSIZE == 0 && va >= USER_MAP_BASE && va < USER_MAP_END;
}

static int sys_map(struct trapframe *tf)
{
    u32 va = tf->ebx;
    if (!map_area_ok(va))
        return -1;
    pte_t *pte = vm_lookup(current->pgdir, va);
    if (pte && (*pte & PG_P))
        return -1;
    void *page = kalloc();
    if (!page)
        return -1;
    if (vm_map(current->pgdir, va, page, PG_W | PG_U) < 0) {
        kfree(page);
        return -1;
    }
    return 0;
}

static int sys_unmap(struct trapframe *tf)
{
    u32 va = tf->ebx;
    if (!map_area_ok(va))
        return -1;
    void *page = vm_unmap(current->pgdir, va);
    if (!page)
        return -1;
    kfree(page);
    return 0;
}

static int sys_time(struct trapframe *tf)
{
    (void)tf;
    return (int)ticks;
}

static int sys_catch(struct trapframe *tf)
{
    u32 handler = tf->ebx;
    if (handler && (handler < USER_BASE || handler >= USER_TOP))
        return -1;
    current->catch_handler = handler;
    return 0;
}

static int (*const handlers[NSYSCALLS])(struct trapframe *) = {
    [SYS_write] = sys_write,
    [SYS_exit] = sys_exit,
    [SYS_getpid] = sys_getpid,
    [SYS_yield] = sys_yield,
    [SYS_fork] = sys_fork,
    [SYS_wait] = sys_wait,
    [SYS_sbrk] = sys_sbrk,
    [SYS_map] = sys_map,
    [SYS_unmap] = sys_unmap,
    [SYS_time] = sys_time,
    [SYS_catch] = sys_catch,
};

void syscall(struct trapframe *tf)
{
    u32 n = tf->eax;
    if (n < NSYSCALLS && handlers[n])
        tf->eax = (u32)handlers[n](tf);
    else
        tf->eax = (u32)-1;
}
