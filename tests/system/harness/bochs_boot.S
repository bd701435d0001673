/* A floppy boot sector that loads a snippet kernel for Bochs.
 *
 * Bochs has no Multiboot loader, so bochs.py writes the kernel's loadable
 * segments to the floppy after this sector and fills in the parameter
 * block below.  The sector reads them (BIOS INT 13h, one sector at a time)
 * to 0x10000, enables A20, switches to protected mode with flat segments,
 * copies every chunk to its load address and jumps to the entry point with
 * EAX = 0x2BADB002: the Multiboot machine state the harness relies on.
 * Linked at 0x7c00 as a flat binary.
 */
    .code16
    .text
    .globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7c00, %sp
    movb %dl, boot_drive
    movw $0x1000, %ax
    movw %ax, %es
    xorw %bx, %bx
    movw $1, %si                      /* LBA of the first payload sector */
load:
    cmpw nsectors, %si
    ja loaded
    movw %si, %ax                     /* LBA -> CHS, 18 sectors, 2 heads */
    xorw %dx, %dx
    movw $18, %cx
    divw %cx
    movb %dl, %cl
    incb %cl
    xorw %dx, %dx
    movw $2, %di
    divw %di
    movb %al, %ch
    movb %dl, %dh
    movb boot_drive, %dl
    movw $3, %di                      /* retries */
1:  movw $0x0201, %ax
    pushw %cx
    pushw %dx
    int $0x13
    popw %dx
    popw %cx
    jnc 2f
    decw %di
    jnz 1b
    jmp fail
2:  movw %es, %ax
    addw $0x20, %ax
    movw %ax, %es
    incw %si
    jmp load

loaded:
    inb $0x92, %al                    /* fast A20 */
    orb $2, %al
    andb $0xfe, %al
    outb %al, $0x92
    lgdtl gdtr
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $pm

    .code32
pm:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %fs
    movl %eax, %gs
    movl %eax, %ss
    movl $0x7c00, %esp
    cld
    movl $chunks, %ebp
3:  movl 8(%ebp), %ecx
    testl %ecx, %ecx
    jz 4f
    movl (%ebp), %esi
    movl 4(%ebp), %edi
    rep movsb
    addl $12, %ebp
    jmp 3b
4:  movl entry, %ecx
    movl $0x2badb002, %eax
    xorl %ebx, %ebx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    jmp *%ecx

    .code16
fail:
    hlt
    jmp fail

    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdtr:
    .word 23
    .long gdt
boot_drive:
    .byte 0

    /* Parameter block, filled in by bochs.py (offset 0x180). */
    .org 0x180
nsectors:
    .word 0
    .word 0
entry:
    .long 0
chunks:                               /* (source, destination, length) x 8, length 0 ends */
    .fill 8 * 3, 4, 0
    .org 510
    .word 0xaa55
