/* hk.h: the small library of the hostile test kernels (guests/hostile/).
 *
 * On top of the test-kernel helpers (tk.h: COM1, numbers, debug exit) it
 * gives every hostile kernel the same frame:
 *
 * - a GDT with ring-0 code/data (0x08/0x10), ring-3 code/data (0x1b/0x23),
 *   a TSS (0x28) and spare slots 6..15 (HK_SPARE) for experiments;
 * - an IDT whose 256 gates all lead to hk_trap() (INT3 and 0x80 with DPL 3);
 * - hk_try(fn, arg): run an attack; if it faults, the handler records the
 *   exception and resumes after hk_try, which returns the vector (-1: no
 *   fault).  GDTR, IDTR and the segment registers are restored either way;
 * - hk_user(fn, eflags): run fn at CPL 3 with the given EFLAGS (so IOPL can
 *   be chosen); fn comes back with hk_user_return() (INT 0x80).  Returns
 *   0x80 on a clean return, else the vector of the fault;
 * - identity paging of the first 4 MiB (hk_pd, hk_pt0), PIC/PIT helpers.
 *
 * Output lines are "<name>: ...".  A line containing "[platform]" reports
 * something that legitimately differs between PC implementations (open bus
 * values, PCI); "[sensitive]" marks the result of a sensitive but
 * unprivileged instruction, which the standard IA-32 CPU lets the guest see
 * under trap-and-emulate.  The tests compare everything else exactly.
 */
#ifndef HK_H
#define HK_H

#include "tk.h"

#define KCODE 0x08
#define KDATA 0x10
#define UCODE 0x1b
#define UDATA 0x23
#define TSS_SEL 0x28
#define HK_SPARE 6            /* first free GDT slot */
#define HK_GDT_SLOTS 16

#define PG_P 0x001u
#define PG_W 0x002u
#define PG_U 0x004u
#define PG_PS 0x080u
#define CR0_PG 0x80000000u
#define CR4_PSE 0x00000010u
#define EFLAGS_IF 0x200u
#define EFLAGS_IOPL3 0x3000u

struct hk_frame {
    u32 ds, es;
    u32 edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
    u32 vector, err;
    u32 eip, cs, eflags, user_esp, user_ss;
};

extern const char *hk_name;
extern struct seg_desc hk_gdt[HK_GDT_SLOTS];
extern struct gate_desc hk_idt[256];
extern struct dt_ptr hk_gdt_ptr, hk_idt_ptr;
extern u32 hk_pd[1024], hk_pt0[1024];
extern volatile u32 hk_vec, hk_err, hk_cr2, hk_fault_eip;
extern volatile u32 hk_irqs[16];
extern u32 hk_ram_end;                 /* guest RAM size rounded up to 4 MiB */
extern void (*hk_irq_hook)(u32 irq);   /* called for each IRQ before the EOI */

void hk_init(const char *name, u32 magic, struct mb_info *mbi);
int hk_try(void (*fn)(u32), u32 arg);
int hk_user(void (*fn)(void), u32 eflags);
void hk_user_return(void);             /* callable at CPL 3 only */
void hk_report(const char *what, int vector);   /* "<name>: <what>: <fault>" */
void hk_put_fault(int vector);         /* "no fault", "#GP err=0x0010", "#PF err=.. cr2=.." */
void hk_line(const char *what);        /* "<name>: <what>\n" */
void hk_prefix(void);                  /* "<name>: " */
void hk_paging_on(void);               /* hk_pd with hk_pt0 identity 0-4 MiB */
void hk_paging_off(void);
void hk_invlpg(u32 lin);
void hk_pic_remap(u8 master_mask, u8 slave_mask);
void hk_pit(u16 divisor);              /* counter 0, mode 2 */
__attribute__((noreturn)) void hk_done(void);  /* "<name>: done", exit 0 */

static inline u32 hk_read32(u32 addr) { return *(volatile u32 *)addr; }
static inline void hk_write32(u32 addr, u32 v) { *(volatile u32 *)addr = v; }

#endif
