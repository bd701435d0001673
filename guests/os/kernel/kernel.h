/* kernel.h: declarations shared between the kernel's source files
 * (xv6 calls this defs.h).  One section per file. */
#ifndef TVOS_KERNEL_H
#define TVOS_KERNEL_H
#include "types.h"
#include "x86.h"
#include "fmt.h"

/* Exit values written to the debug-exit port (QEMU exit code = 2v+1). */
#define EXIT_OK        0
#define EXIT_WORKLOAD  1   /* the workload's init process exited non-zero */
#define EXIT_PANIC     2   /* kernel panic */
#define EXIT_USAGE     3   /* bad command line */

/* console.c */
void console_init(void);
void console_putc(char c);
void console_write(const char *s, u32 len);
void kprintf(const char *f, ...) __attribute__((format(printf, 1, 2)));

/* panic.c */
void panic(const char *f, ...) __attribute__((noreturn, format(printf, 1, 2)));
void machine_exit(u8 value) __attribute__((noreturn));
#define KASSERT(c) do { if (!(c)) panic("assertion failed: %s (%s:%d)", #c, __FILE__, __LINE__); } while (0)

/* gdt.c */
extern struct segdesc gdt[NSEGS];
extern struct tss ktss;
void gdt_init(void);

/* trap.c */
extern struct gatedesc idt[256];
extern volatile u32 ticks;
void trap_init(void);
void trap(struct trapframe *tf);
const char *trap_name(u32 trapno);
extern volatile u32 probe_int_cs, probe_int_count;

/* timer.c: 8259 PIC and 8254 PIT */
#define TIMER_HZ 100
void pic_init(void);
void pic_eoi(int irq);
void pit_init(void);

/* kalloc.c: physical pages */
void kalloc_init(u32 start, u32 end);
void *kalloc(void);                 /* one zeroed 4 KiB page, or NULL */
void kfree(void *page);
u32 kalloc_free_pages(void);

/* vm.c: page directories */
extern pde_t *kernel_pgdir;
extern u32 mem_top;
void vm_init(u32 top);
pde_t *vm_new_pgdir(void);          /* kernel half shared, user half empty */
void vm_free_pgdir(pde_t *pgdir);   /* frees the user half and the directory */
int vm_map(pde_t *pgdir, u32 va, void *page, u32 flags);
void *vm_unmap(pde_t *pgdir, u32 va);   /* -> the page that was mapped, or NULL */
pte_t *vm_lookup(pde_t *pgdir, u32 va);
int vm_copy_user(pde_t *dst, pde_t *src);
int vm_user_fault(u32 va);          /* resolve a fault of the current process */
int vm_user_range_ok(u32 va, u32 len);   /* also faults the range in */

/* proc.c */
enum procstate { UNUSED, EMBRYO, RUNNABLE, RUNNING, SLEEPING, ZOMBIE };
struct proc {
    int pid;
    enum procstate state;
    pde_t *pgdir;
    u8 *kstack;                 /* bottom of its kernel stack */
    struct context *context;    /* saved by cpu_switch_context */
    struct trapframe *tf;
    struct proc *parent;
    int exit_status;
    u32 heap_start, brk;        /* [heap_start, brk) may fault in lazily */
    u32 catch_handler;          /* user divide-error handler, or 0 */
    int waiting_for;            /* pid given to wait(), while SLEEPING */
    char name[16];
};
#define NPROC 16
#define KSTACK_SIZE 8192
extern struct proc *current;
void proc_init(void);
struct proc *proc_alloc(void);
void proc_free(struct proc *p);
int proc_pick_next(int after);      /* index of next RUNNABLE slot, or -1 */
extern struct proc procs[NPROC];
struct proc *proc_create_init(const char *workload, u32 iterations);
void scheduler(void) __attribute__((noreturn));
void proc_yield(void);
void proc_exit(int status) __attribute__((noreturn));
int proc_fork(void);
int proc_wait(int pid, int *status);
void proc_kill_current(u32 trapno, u32 addr) __attribute__((noreturn));

/* elf.c */
int elf_load(pde_t *pgdir, const u8 *image, u32 size, u32 *entry, u32 *image_end);
extern const u8 init_elf_start[], init_elf_end[];

/* syscall.c */
void syscall(struct trapframe *tf);

/* cmdline.c */
struct cmdline { char workload[32]; u32 iterations; int iterations_given; char error[96]; };
int cmdline_parse(const char *s, struct cmdline *out);   /* 0 ok, -1 error */

/* workloads.c: the table of workloads */
enum wl_kind { WL_KERNEL, WL_USER };
struct workload {
    const char *name;
    enum wl_kind kind;
    u32 default_iterations;
    u32 (*run)(u32 iterations);     /* kernel workloads: -> checksum */
};
const struct workload *workload_find(const char *name);
extern const struct workload workloads[];
extern const int nworkloads;

/* kwork.c, probe.c, selftest.c: kernel-mode workloads */
u32 kwork_io(u32 iterations);
u32 kwork_crwrite(u32 iterations);
u32 kwork_panic(u32 iterations);
u32 kwork_balloon(u32 iterations);   /* balloon.c: the balloon driver's workload */
u32 probe_run(u32 iterations);
u32 selftest_run(u32 iterations);

#endif
