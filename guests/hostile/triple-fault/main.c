/* triple-fault: make the processor shut down.
 *
 * mode=0: IDT limit 0, then INT3 -- #GP, which cannot be delivered either
 *         (#DF), whose delivery fails too: triple fault;
 * mode=1: paging on, an IDT whose gates are all not present, then a load
 *         from an unmapped page: #PF, #NP on its gate, #DF, triple fault;
 * mode=2: a valid IDT but ESP in an unmapped page: the exception frame
 *         cannot be pushed (#PF), nor can #DF's: triple fault.
 * A real machine shuts down (QEMU with -no-reboot exits); a VMM must stop
 * the VM and carry on.
 */
#include "hk.h"

static struct gate_desc empty_idt[256] __attribute__((aligned(8)));

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("triple-fault", magic, mbi);
    u32 mode = cmdline_uint(mbi, "mode", 0);
    if (mode == 0) {
        hk_line("lidt limit 0, int3");
        struct dt_ptr p = { 0, (u32)hk_idt };
        __asm__ volatile("lidt %0\n\tint3" : : "m"(p));
    } else if (mode == 1) {
        hk_line("paging on, every gate not present, load from an unmapped page");
        hk_paging_on();
        hk_pt0[0x3ff] = 0;             /* 0x003FF000 unmapped */
        hk_invlpg(0x003ff000);
        struct dt_ptr p = { sizeof empty_idt - 1, (u32)empty_idt };
        __asm__ volatile("lidt %0\n\tmovl 0x003ff000, %%eax" : : "m"(p) : "eax");
    } else {
        hk_line("paging on, esp in an unmapped page, int3");
        hk_paging_on();
        hk_pt0[0x3ff] = 0;
        hk_invlpg(0x003ff000);
        __asm__ volatile("movl $0x00400000, %%esp\n\tint3" ::: "memory");
    }
    hk_line("still running after the triple fault");
    tk_exit(1);
}
