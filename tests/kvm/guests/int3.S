/* int3: INT3 raises #BP, a trap whose saved EIP is the byte after the instruction
 * (Intel SDM Vol. 3A 6.5 and Table 6-1).  The #BP handler prints the saved EIP
 * against the address it should be, then leaves through isa-debug-exit (no IRET).
 */
    .code32
    .include "guest.inc"
    guest_entry
    set_gate 3, bp_handler, 0x8F00
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

    serial_routines

s_none: .asciz "no #BP\n"
s_bp:   .asciz "#BP, saved eip "
s_want: .asciz ", int3 ends at "
    idt_table
