/* Shared entry of the C test kernels: Multiboot 1 header, a boot stack,
 * and a call to kmain(magic, mbi). */
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
    movl $boot_stack_top, %esp
    pushl %ebx                        /* multiboot info */
    pushl %eax                        /* magic */
    call kmain
1:  cli
    hlt
    jmp 1b

    .bss
    .align 16
    .globl boot_stack_top
    .space 16384
boot_stack_top:
