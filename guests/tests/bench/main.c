/* bench: the bench kernel of benchmarks/vs_qemu.py.
 *
 * Runs the same six loops on any PC (trapvisor, QEMU TCG): paging is on
 * (4 KiB pages identity-mapping 32 MiB, user-accessible, so every access goes
 * through the TLB), and each workload is bracketed by serial lines
 * "B name" and "E name result": the host timestamps the end of the first and
 * the start of the second, and checks the result against a formula, so that
 * a wrong simulator cannot post a figure.  The loops (loops.S) have a fixed
 * instruction count per iteration; the counts come from the command line
 * (alu= call= sweep= stos= movs= int=; 0 skips a workload).
 *
 *   alu    ALU loop (8 instructions an iteration)
 *   call   CALL/RET loop (5 instructions an iteration)
 *   sweep  read-add-increment-store over a 4 MiB buffer (7 instructions a word), rounds
 *   stos   REP STOSD over the 4 MiB buffer, rounds
 *   movs   REP MOVSD of the 4 MiB buffer to another, rounds
 *   int    INT 0x80 from ring 3 to a DPL-3 interrupt gate and IRET back, round trips
 */
#include "tk.h"

#define BUF_A ((u32 *)0x01000000)      /* 16 MiB */
#define BUF_B ((u32 *)0x01400000)      /* 20 MiB */
#define WORDS (1u << 20)               /* 4 MiB */
#define STRIDE 1021u                   /* sparse checksum: every 1021st word */

struct tss {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
};

static struct seg_desc gdt[6];
static struct gate_desc idt[256];
static struct tss tss;
static u32 page_dir[1024] __attribute__((aligned(4096)));
static u32 page_tables[8][1024] __attribute__((aligned(4096)));
static u8 kernel_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(16)));

extern u32 alu_loop(u32 n);
extern u32 call_loop(u32 n);
extern u32 sweep_loop(u32 *buf, u32 words, u32 rounds);
extern void stos_loop(u32 *buf, u32 words, u32 rounds);
extern void movs_loop(u32 *dst, const u32 *src, u32 words, u32 rounds);
extern void int80_entry(void), int81_entry(void), other_entry(void), user_int_loop(void);
extern void enter_user(u32 eip, u32 esp, u32 ecx) __attribute__((noreturn));
extern volatile u32 int_count;

static void begin(const char *name)
{
    puts("B ");
    puts(name);
    putc('\n');
}

static void end(const char *name, u32 result)
{
    puts("E ");
    puts(name);
    putc(' ');
    putdec(result);
    putc('\n');
}

static u32 sparse_sum(const u32 *buf)
{
    u32 s = 0;
    for (u32 i = 0; i < WORDS; i += STRIDE)
        s += buf[i];
    return s;
}

void bad_trap(void)
{
    puts("bench: unexpected trap\n");
    tk_exit(3);
}

void int_done(void)
{
    end("int", int_count);
    puts("bench: done\n");
    tk_exit(0);
}

static void paging_on(void)
{
    for (u32 t = 0; t < 8; t++) {
        for (u32 i = 0; i < 1024; i++)
            page_tables[t][i] = ((t * 1024 + i) << 12) | 7;     /* P, RW, US */
        page_dir[t] = (u32)page_tables[t] | 7;
    }
    __asm__ volatile("mov %0, %%cr3" : : "r"(page_dir) : "memory");
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u) : "memory");
}

static void tables(void)
{
    tss.ss0 = 0x10;
    tss.esp0 = (u32)kernel_stack + sizeof kernel_stack;
    tss.iomap_base = sizeof tss;
    gdt[1] = SEG(0, 0xfffff, 0x9b, 0xc);   /* ring-0 code */
    gdt[2] = SEG(0, 0xfffff, 0x93, 0xc);   /* ring-0 data */
    gdt[3] = SEG(0, 0xfffff, 0xfb, 0xc);   /* ring-3 code */
    gdt[4] = SEG(0, 0xfffff, 0xf3, 0xc);   /* ring-3 data */
    gdt[5] = SEG((u32)&tss, sizeof tss - 1, 0x89, 0x0);
    struct dt_ptr gp = { sizeof gdt - 1, (u32)gdt };
    __asm__ volatile(
        "lgdt %0\n\t"
        "ljmp $0x08, $1f\n"
        "1:\n\t"
        "movw $0x10, %%ax\n\t"
        "movw %%ax, %%ds\n\t movw %%ax, %%es\n\t movw %%ax, %%ss\n\t"
        "movw %%ax, %%fs\n\t movw %%ax, %%gs\n\t"
        "movw $0x28, %%ax\n\t"
        "ltr %%ax"
        : : "m"(gp) : "eax", "memory");
    for (int v = 0; v < 256; v++)
        set_gate(&idt[v], other_entry, 0x08, 0x8e);
    set_gate(&idt[0x80], int80_entry, 0x08, 0xee);
    set_gate(&idt[0x81], int81_entry, 0x08, 0xee);
    struct dt_ptr ip = { sizeof idt - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(ip));
}

void kmain(u32 magic, struct mb_info *mbi)
{
    serial_init();
    if (magic != 0x2BADB002)
        tk_exit(2);
    u32 n_alu = cmdline_uint(mbi, "alu", 1000000);
    u32 n_call = cmdline_uint(mbi, "call", 1000000);
    u32 n_sweep = cmdline_uint(mbi, "sweep", 1);
    u32 n_stos = cmdline_uint(mbi, "stos", 1);
    u32 n_movs = cmdline_uint(mbi, "movs", 1);
    u32 n_int = cmdline_uint(mbi, "int", 10000);
    tables();
    paging_on();
    stos_loop(BUF_A, WORDS, 0 + 1);            /* touch and fill the buffers (untimed) */
    stos_loop(BUF_B, WORDS, 1);
    puts("bench: ready\n");
    if (n_alu) {
        begin("alu");
        end("alu", alu_loop(n_alu));
    }
    if (n_call) {
        begin("call");
        end("call", call_loop(n_call));
    }
    if (n_sweep) {
        for (u32 i = 0; i < WORDS; i++)        /* zero (untimed) */
            BUF_A[i] = 0;
        begin("sweep");
        end("sweep", sweep_loop(BUF_A, WORDS, n_sweep));
    }
    if (n_stos) {
        begin("stos");
        stos_loop(BUF_A, WORDS, n_stos);
        end("stos", sparse_sum(BUF_A));
    }
    if (n_movs) {
        begin("movs");
        movs_loop(BUF_B, BUF_A, WORDS, n_movs);
        end("movs", sparse_sum(BUF_B));
    }
    if (n_int) {
        begin("int");
        enter_user((u32)user_int_loop, (u32)user_stack + sizeof user_stack, n_int);
    }
    puts("bench: done\n");
    tk_exit(0);
}
