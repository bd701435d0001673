/* sys-desc: system descriptors installed by the guest.
 *
 * A monitor that copies the guest's GDT into the host's must not let the
 * host CPU use the guest's system descriptors: a call gate would move the
 * host to a privilege level and stack the guest chose, a task switch would
 * load the guest's CR3 and SS0:ESP0 into the host CPU.  Each one must work
 * exactly as on the bare machine, on the guest's own tables.
 *
 * mode=0: a DPL-3 call gate to ring-0 code; ring 3 calls it, the target
 *         reads CR0 (privileged: it really is at ring 0) and returns;
 * mode=1: a second TSS with a CR3 of the guest's choosing (paging is off, so
 *         natively it is not loaded; a host CPU that used the guest's TSS
 *         would load the guest's state instead of the monitor's); JMP to it, the new task reads CR3 and
 *         jumps back to the first task (whose TSS's CR3 the output shows);
 * mode=2: the same task reached through a task gate in the GDT (CALL).
 */
#include "hk.h"

struct tss32 {
    u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
};

#define GATE_SEL ((HK_SPARE + 0) * 8 + 3)
#define TSS2_SEL ((HK_SPARE + 1) * 8)
#define TGATE_SEL ((HK_SPARE + 2) * 8)

static struct tss32 tss2 __attribute__((aligned(128)));
static u8 stack2[4096] __attribute__((aligned(16)));
static volatile u32 gate_cr0, task_cr3, task_ran, back_link;

extern void sd_gate_target(void);
/* Ring 0 through the call gate: read CR0, return to ring 3 with a far return. */
__asm__(".globl sd_gate_target\nsd_gate_target:\n\tmovl %cr0, %eax\n\tmovl %eax, gate_cr0\n\tlret\n");

static void ring3_calls_gate(void)
{
    __asm__ volatile("lcall %0, $0" : : "i"(GATE_SEL) : "eax", "memory");
    hk_user_return();
}

static void task2_body(void)
{
    u32 cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    task_cr3 = cr3;
    task_ran = 1;
    back_link = tss2.link;
    if (tss2.link)                  /* reached by CALL: return with IRET (NT set) */
        __asm__ volatile("iret");
    else
        __asm__ volatile("ljmp %0, $0" : : "i"(TSS_SEL));
    for (;;)
        ;
}

static void setup_task2(void)
{
    tss2.cr3 = (u32)hk_pd;
    tss2.eip = (u32)task2_body;
    tss2.eflags = 0x2;
    tss2.esp = (u32)stack2 + sizeof stack2;
    tss2.cs = KCODE;
    tss2.ss = tss2.ds = tss2.es = tss2.fs = tss2.gs = KDATA;
    tss2.iomap_base = sizeof tss2;
    hk_gdt[HK_SPARE + 1] = SEG((u32)&tss2, sizeof tss2 - 1, 0x89, 0x0);
}

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("sys-desc", magic, mbi);
    u32 mode = cmdline_uint(mbi, "mode", 0);
    if (mode == 0) {
        struct gate_desc *g = (struct gate_desc *)&hk_gdt[HK_SPARE];
        set_gate(g, sd_gate_target, KCODE, 0xec);    /* 32-bit call gate, DPL 3, present */
        int v = hk_user(ring3_calls_gate, 0x2);
        hk_prefix();
        puts("call gate from ring 3: ");
        hk_put_fault(v == 0x80 ? -1 : v);
        puts(v == 0x80 && (gate_cr0 & 1) ? ", ring 0 reached (CR0.PE read), back at ring 3\n"
                                          : ", gate did NOT work as natively\n");
    } else {
        setup_task2();
        if (mode == 1) {
            __asm__ volatile("ljmp %0, $0" : : "i"(TSS2_SEL) : "memory");
        } else {
            struct gate_desc *g = (struct gate_desc *)&hk_gdt[HK_SPARE + 2];
            set_gate(g, 0, TSS2_SEL, 0xe5);           /* task gate, DPL 3, present */
            __asm__ volatile("lcall %0, $0" : : "i"(TGATE_SEL) : "memory");
        }
        u32 cr3;
        __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
        hk_prefix();
        /* With paging off a task switch leaves CR3 as it is (as QEMU does). */
        puts(task_ran ? "task switch: the new task ran with CR3 " : "task switch: the new task did NOT run, CR3 ");
        puthex(task_cr3, 8);
        puts(", back with CR3 ");
        puthex(cr3, 8);
        puts(back_link ? " (back link set)\n" : " (no back link)\n");
    }
    hk_done();
}
