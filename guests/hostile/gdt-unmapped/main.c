/* gdt-unmapped: take the GDT away under the monitor's feet.
 *
 * The GDTR holds a linear address.  With paging on, the kernel clears the
 * page-table entry of the page holding its GDT, then loads DS and does an
 * OUT.  A real machine reads the descriptor through the page tables: #PF on
 * the load, and delivering it needs the GDT again (#PF, #DF, shutdown).
 *
 * Under trap-and-emulate the host loads segments from the monitor's shadow
 * copy of the GDT.  On the standard CPU the load runs directly at ring 1, so
 * the monitor must rebuild that copy when the guest's mapping of its GDT
 * changes (here at the INVLPG), or the load succeeds from a stale copy and
 * the line below is printed.  On the strict CPU the load traps and is
 * emulated.  Either way the guest must get the real machine's behaviour.
 */
#include "hk.h"

void kmain(u32 magic, struct mb_info *mbi)
{
    hk_init("gdt-unmapped", magic, mbi);
    hk_paging_on();
    u32 page = ((u32)hk_gdt) >> 12;
    hk_line("gdt page unmapped; mov ds, then out (a real machine shuts down)");
    hk_pt0[page] = 0;
    hk_invlpg(page << 12);
    __asm__ volatile("movw $0x10, %%ax\n\tmovw %%ax, %%ds\n\toutb %%al, $0x80" ::: "eax");
    hk_line("[sensitive] ds loaded from the monitor's copy of the unmapped gdt");
    tk_exit(0);
}
