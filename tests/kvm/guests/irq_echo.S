/* irq_echo: interrupt-driven serial echo, to test UART input with its IRQ under KVM.
 *
 * Multiboot (a.out kludge) at 1 MiB, ring 0, no paging.  Programs the 8259
 * pair (vectors 0x20/0x28, only IRQ 4 unmasked), enables the 16550's
 * receive-data interrupt and OUT2, then sleeps in HLT.  The IRQ 4 handler
 * echoes every received byte; 'q' leaves through isa-debug-exit (value 0).
 */
    .code32
    .include "guest.inc"
    guest_entry
    set_gate 0x24, isr
    lidt idtr

    pic_init 0xEF

    mov $(COM1 + 4), %dx; mov $0x0B, %al; out %al, %dx /* MCR: DTR RTS OUT2 */
    mov $(COM1 + 1), %dx; mov $0x01, %al; out %al, %dx /* IER: received data */
    sti
1:  hlt
    jmp 1b

isr:
    push %eax
    push %edx
2:  mov $(COM1 + 5), %dx
    in %dx, %al
    test $1, %al
    jz 3f
    mov $COM1, %dx
    in %dx, %al
    cmp $'q', %al
    je done
    out %al, %dx
    jmp 2b
3:  mov $0x20, %al
    out %al, $0x20                                     /* EOI */
    pop %edx
    pop %eax
    iret
done:
    mov $0, %al
    out %al, $0xf4
    cli
4:  hlt
    jmp 4b

    idt_table
