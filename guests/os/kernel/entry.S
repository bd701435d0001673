/* entry.S: where the boot loader leaves us.
 *
 * Multiboot 1 guarantees 32-bit protected mode with flat segments, paging
 * off, interrupts off, EAX = 0x2BADB002 and EBX = the info structure.  We
 * only set up a stack and call kmain(magic, info); main.c does the rest. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003   /* bit 0: page-aligned modules; bit 1: memory info */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .boot.text, "ax"
    .globl _start
_start:
    movl $boot_stack_top, %esp
    xorl %ebp, %ebp                 /* end of the frame-pointer chain */
    pushl %ebx
    pushl %eax
    call kmain
1:  jmp 1b                          /* kmain does not return */

    .bss
    .align 16
    .globl boot_stack_top
boot_stack:
    .space 16384
boot_stack_top:
