/* initcode.S: the user program, linked into the kernel image as an ELF
 * file (built first, from ../user; the build puts it on the include path). */
    .section .rodata
    .align 4
    .globl init_elf_start, init_elf_end
init_elf_start:
    .incbin "init.elf"
init_elf_end:
