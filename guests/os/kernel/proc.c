/* proc.c: processes and the round-robin scheduler.
 *
 * The scheduler runs on the boot stack in its own context.  It walks the
 * process table in order, starting after the slot it ran last, and
 * switches to the first RUNNABLE process; when that process gives up the
 * CPU (yield, timer preemption, wait, exit) control comes back here.  If
 * nothing is runnable it halts until the next interrupt.
 *
 * The kernel itself is never preempted: it runs with interrupts off, and
 * the timer only forces a yield when it interrupts ring 3 (see trap.c). */
#include "kernel.h"
#include "cpuops.h"
#include "syscall.h"

struct proc procs[NPROC];
struct proc *current;
static struct proc *initproc;
static struct context *scheduler_context;
static int next_pid = 1;
static u8 kstacks[NPROC][KSTACK_SIZE] __attribute__((aligned(16)));

void proc_init(void)
{
    for (int i = 0; i < NPROC; i++) {
        procs[i].state = UNUSED;
        procs[i].kstack = kstacks[i];
    }
}

/* A new process first "returns" from cpu_switch_context into forkret,
 * whose own return goes to cpu_trap_return with the trap frame on top of
 * the stack: that IRET starts it in ring 3. */
static void forkret(void) {}

struct proc *proc_alloc(void)
{
    struct proc *p = NULL;
    for (int i = 0; i < NPROC; i++)
        if (procs[i].state == UNUSED) {
            p = &procs[i];
            break;
        }
    if (!p)
        return NULL;
    u8 *kstack = p->kstack;
    memset(p, 0, sizeof *p);
    p->kstack = kstack;
    p->state = EMBRYO;
    p->pid = next_pid++;

    u8 *sp = p->kstack + KSTACK_SIZE;
    sp -= sizeof *p->tf;
    p->tf = (struct trapframe *)sp;
    memset(p->tf, 0, sizeof *p->tf);
    sp -= 4;
    *(u32 *)sp = (u32)cpu_trap_return;
    sp -= sizeof *p->context;
    p->context = (struct context *)sp;
    memset(p->context, 0, sizeof *p->context);
    p->context->eip = (u32)forkret;
    return p;
}

void proc_free(struct proc *p)
{
    if (p->pgdir)
        vm_free_pgdir(p->pgdir);
    p->pgdir = NULL;
    p->state = UNUSED;
}

/* Round robin: the next RUNNABLE slot after `after` (wrapping), or -1. */
int proc_pick_next(int after)
{
    for (int k = 1; k <= NPROC; k++) {
        int i = (after + k) % NPROC;
        if (procs[i].state == RUNNABLE)
            return i;
    }
    return -1;
}

struct proc *proc_create_init(const char *workload, u32 iterations)
{
    struct proc *p = proc_alloc();
    if (!p || !(p->pgdir = vm_new_pgdir()))
        panic("cannot create the init process");
    u32 entry, image_end;
    if (elf_load(p->pgdir, init_elf_start, (u32)(init_elf_end - init_elf_start),
                 &entry, &image_end) < 0)
        panic("init.elf is not a loadable ELF32 i386 executable");
    p->heap_start = p->brk = PGROUNDUP(image_end);

    /* One stack page now (more on demand), holding main's arguments:
     *   [esp] -> workload string pointer, iterations; string above them. */
    u8 *stack = kalloc();
    if (!stack || vm_map(p->pgdir, USER_STACK_TOP - PGSIZE, stack, PG_W | PG_U) < 0)
        panic("cannot map the init stack");
    u32 len = strlen(workload) + 1;
    u32 str_off = PGSIZE - ((len + 3) & ~3u);   /* keep the arguments word-aligned */
    memcpy(stack + str_off, workload, len);
    u32 *args = (u32 *)(stack + str_off) - 2;
    args[0] = USER_STACK_TOP - PGSIZE + str_off;
    args[1] = iterations;

    struct trapframe *tf = p->tf;
    tf->cs = UCODE_SEL;
    tf->ds = tf->es = tf->fs = tf->gs = tf->ss = UDATA_SEL;
    tf->eflags = FL_IF;          /* interrupts on in ring 3, IOPL 0 */
    tf->esp = USER_STACK_TOP - PGSIZE + (u32)((u8 *)args - stack);
    tf->eip = entry;
    memcpy(p->name, "init", 5);
    initproc = p;
    p->state = RUNNABLE;
    return p;
}

void scheduler(void)
{
    int last = NPROC - 1;
    for (;;) {
        int i = proc_pick_next(last);
        if (i < 0) {
            cpu_wait_for_interrupt();
            continue;
        }
        last = i;
        struct proc *p = &procs[i];
        current = p;
        p->state = RUNNING;
        cpu_set_kernel_stack((u32)p->kstack + KSTACK_SIZE);
        cpu_write_cr3((u32)p->pgdir);
        cpu_switch_context(&scheduler_context, p->context);
        /* Back from the process: run on the kernel's own page tables. */
        cpu_write_cr3((u32)kernel_pgdir);
        current = NULL;
    }
}

static void sched(void)
{
    cpu_switch_context(&current->context, scheduler_context);
}

void proc_yield(void)
{
    current->state = RUNNABLE;
    sched();
}

void proc_exit(int status)
{
    struct proc *p = current;
    if (p == initproc) {
        /* The workload is over: end the run with its status. */
        if (status != 0) {
            kprintf("tvos: init exited with status %d\n", status);
            machine_exit(EXIT_WORKLOAD);
        }
        machine_exit(EXIT_OK);
    }
    for (int i = 0; i < NPROC; i++)
        if (procs[i].state != UNUSED && procs[i].parent == p)
            procs[i].parent = initproc;
    p->exit_status = status;
    p->state = ZOMBIE;
    /* Wake init too: it may have inherited a zombie it is waiting for. */
    struct proc *wake[2] = { p->parent, initproc };
    for (int k = 0; k < 2; k++) {
        struct proc *w = wake[k];
        if (w && w->state == SLEEPING && (w->waiting_for == -1 || w->waiting_for == p->pid))
            w->state = RUNNABLE;
    }
    sched();
    panic("zombie pid %d ran", p->pid);
}

int proc_fork(void)
{
    struct proc *np = proc_alloc();
    if (!np)
        return -1;
    if (!(np->pgdir = vm_new_pgdir()) || vm_copy_user(np->pgdir, current->pgdir) < 0) {
        proc_free(np);
        return -1;
    }
    *np->tf = *current->tf;
    np->tf->eax = 0;             /* fork() returns 0 in the child */
    np->heap_start = current->heap_start;
    np->brk = current->brk;
    np->catch_handler = current->catch_handler;
    memcpy(np->name, current->name, sizeof np->name);
    np->parent = current;
    np->state = RUNNABLE;
    return np->pid;
}

int proc_wait(int pid, int *status)
{
    for (;;) {
        int have_child = 0;
        for (int i = 0; i < NPROC; i++) {
            struct proc *c = &procs[i];
            if (c->state == UNUSED || c->parent != current || (pid != -1 && c->pid != pid))
                continue;
            have_child = 1;
            if (c->state == ZOMBIE) {
                int cpid = c->pid;
                *status = c->exit_status;
                proc_free(c);
                return cpid;
            }
        }
        if (!have_child)
            return -1;
        current->waiting_for = pid;
        current->state = SLEEPING;
        sched();
    }
}

void proc_kill_current(u32 trapno, u32 addr)
{
    if (trapno == T_PGFLT)
        kprintf("tvos: pid %d killed: %s at eip 0x%08x, address 0x%08x\n",
                current->pid, trap_name(trapno), current->tf->eip, addr);
    else
        kprintf("tvos: pid %d killed: %s at eip 0x%08x\n",
                current->pid, trap_name(trapno), current->tf->eip);
    proc_exit(128 + (int)trapno);
}
