/* Snippet kernel, assembly part: Multiboot header, boot, the trap stubs,
 * the common trap entry, and the jump into the snippet.
 *
 * Built once (no per-case options) and linked with a per-case object that
 * supplies the snippet, its data page, the case configuration, the resume
 * table and the table pokes (see runner.py).  The C part is kernel.c.
 *
 * Selectors: see layout.h (shared with kernel.c and runner.py).
 */
#include "layout.h"

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .globl _start
_start:
    cli
    cld
    movl $kstack_top, %esp
    /* Loaders leave different values in the other registers; kmain saves
     * some of them on the boot stack, which the dump shows. */
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    pushl %eax                        /* multiboot magic */
    call kmain
1:  hlt
    jmp 1b

/* reload_segments(): after LGDT, load the harness's own flat ring-0 segments. */
    .globl reload_segments
reload_segments:
    ljmp $KCODE, $1f
1:  movl $KDATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %fs
    movl %eax, %gs
    movl %eax, %ss
    ret

/* enter_frame(frame): pop a prepared struct frame (without vector and error
 * code) and IRET into the snippet.  The frame is laid out like the one the
 * trap stubs build: GS FS ES DS, PUSHAL block, EIP CS EFLAGS [ESP SS]. */
    .globl enter_frame
enter_frame:
    movl 4(%esp), %esp
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    iret

/* Trap stubs, 16 bytes apart: trap_stubs + 16*v for vector v.  Vectors for
 * which the CPU pushes an error code push only the vector (with bit 8 set to
 * say so); the others push a zero error code first.  trap_stubs_noerr holds
 * the zero-pushing variant for every vector (for software INT n to an
 * error-code vector, whose frame has no error code). */
    .align 16
    .globl trap_stubs
trap_stubs:
    .set vec, 0
    .rept 256
    .align 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17)
    pushl $(vec | 0x100)
    .else
    pushl $0
    pushl $vec
    .endif
    jmp trap_common
    .set vec, vec + 1
    .endr

    .align 16
    .globl trap_stubs_noerr
trap_stubs_noerr:
    .set vec, 0
    .rept 256
    .align 16
    pushl $0
    pushl $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

/* The common entry.  It works at any privilege level the gate led to: the
 * data selector it loads is CS + 8 (the GDT pairs every handler code segment
 * with a flat data segment of the same DPL right after it). */
    .globl trap_common
trap_common:
    pushal
    /* The selectors go through EAX (saved above): a 32-bit PUSH of a segment
     * register writes only 16 bits on some CPUs (Bochs) and a zero-extended
     * dword on others (QEMU), and the dump shows this memory. */
    movl %ds, %eax
    pushl %eax
    movl %es, %eax
    pushl %eax
    movl %fs, %eax
    pushl %eax
    movl %gs, %eax
    pushl %eax
    movl %cs, %eax
    addl $8, %eax
    movl %eax, %ds
    movl %eax, %es
    cld
    pushl %esp                        /* struct frame * */
    call trap_c
    addl $4, %esp
    .globl trap_return
trap_return:
    popl %gs
    popl %fs
    popl %es
    popl %ds
    popal
    addl $8, %esp                     /* vector, error code */
    iret

/* Defaults for the call-gate targets; a case that uses a call gate defines
 * its own (strong) cgt0 / cgt1 in the snippet. */
    .weak cgt0, cgt1
cgt0:
cgt1:
    ud2

/* Default case setup hook (CPL 0, before paging is enabled). */
    .weak case_setup
case_setup:
    ret

/* Default (empty) pokes and resume table. */
    .section .rodata
    .weak case_pokes, case_resume
case_pokes:
case_resume:
    .long 0, 0, 0, 0, 0, 0

/* Stacks: ring 0 (boot, TSS SS0:ESP0), ring 1 and ring 2 (SS1:ESP1, SS2:ESP2). */
    .bss
    .align 4096
    .globl kstack_top, r1stack_top, r2stack_top
    .space 8192
kstack_top:
    .space 4096
r1stack_top:
    .space 4096
r2stack_top:
