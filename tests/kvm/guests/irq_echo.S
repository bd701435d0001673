/* irq_echo: interrupt-driven serial echo, to test UART input with its IRQ under KVM.
 *
 * Multiboot (a.out kludge) at 1 MiB, ring 0, no paging.  Programs the 8259
 * pair (vectors 0x20/0x28, only IRQ 4 unmasked), enables the 16550's
 * receive-data interrupt and OUT2, then sleeps in HLT.  The IRQ 4 handler
 * echoes every received byte; 'q' leaves through isa-debug-exit (value 0).
 */
    .code32
    .set COM1, 0x3f8
    .text
    .globl _start
header:
    .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
    .long header, header, 0, 0, _start
_start:
    mov $0x90000, %esp
    mov $isr, %eax
    mov $(idt + 0x24 * 8), %edi
    movw %ax, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8E00, 4(%edi)
    shr $16, %eax
    movw %ax, 6(%edi)
    lidt idtr

    mov $0x11, %al; out %al, $0x20; out %al, $0xA0     /* ICW1 */
    mov $0x20, %al; out %al, $0x21                     /* ICW2: master at 0x20 */
    mov $0x28, %al; out %al, $0xA1                     /*       slave at 0x28 */
    mov $0x04, %al; out %al, $0x21                     /* ICW3 */
    mov $0x02, %al; out %al, $0xA1
    mov $0x01, %al; out %al, $0x21; out %al, $0xA1     /* ICW4: 8086 mode */
    mov $0xEF, %al; out %al, $0x21                     /* only IRQ 4 */
    mov $0xFF, %al; out %al, $0xA1

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

    .align 8
idtr:
    .word 256 * 8 - 1
    .long idt
    .align 8
idt:
    .fill 256 * 8, 1, 0
