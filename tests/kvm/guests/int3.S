/* int3: INT3 raises #BP, a trap whose saved EIP is the byte after the instruction
 * (Intel SDM Vol. 3A 6.5 and Table 6-1).  The #BP handler prints the saved EIP
 * against the address it should be, then leaves through isa-debug-exit (no IRET).
 */
    .code32
    .text
    .globl _start
header:
    .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
    .long header, header, 0, 0, _start
_start:
    mov $0x90000, %esp
    mov $bp_handler, %eax
    mov $(idt + 3 * 8), %edi
    movw %ax, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8F00, 4(%edi)            /* 32-bit trap gate, DPL 0 */
    shr $16, %eax
    movw %ax, 6(%edi)
    lidt idtr
    int3
after:
    mov $s_none, %esi
    call puts
    jmp out
bp_handler:
    mov $s_bp, %esi
    call puts
    pop %eax                         /* the saved EIP */
    call puthex32
    mov $s_want, %esi
    call puts
    mov $after, %eax
    call puthex32
    mov $'\n', %al
    call putc
out:
    mov $0, %al
    out %al, $0xf4
    cli
1:  hlt
    jmp 1b

    .include "serial.inc"

s_none: .asciz "no #BP\n"
s_bp:   .asciz "#BP, saved eip "
s_want: .asciz ", int3 ends at "
    .align 8
idtr:
    .word 256 * 8 - 1
    .long idt
    .align 8
idt:
    .fill 256 * 8, 1, 0
