/* pit_count: count IRQ 0 while spinning, to measure timer delivery without guest exits.
 *
 * Multiboot (a.out kludge) at 1 MiB, ring 0.  Programs the 8259 pair
 * (vectors 0x20/0x28, only IRQ 0 unmasked) and 8254 counter 0 in mode 2 with
 * the count at 0x7004 (set by the test; 0 means 597, 2 kHz), then spins in
 * `jmp .` with interrupts on: the guest itself never exits.  The IRQ 0
 * handler adds one to the u32 at 0x7000, sends the EOI (the only exit per
 * interrupt) and goes back to the spin with a fresh stack: no IRET, which
 * software KVM does not always emulate.
 */
    .code32
    .include "guest.inc"
    .set COUNTER, 0x7000
    .set COUNT, 0x7004
    guest_entry
    set_gate 0x20, isr
    lidt idtr
    movl $0, COUNTER
    pic_init 0xFE
    mov COUNT, %ecx
    test %ecx, %ecx
    jnz 1f
    mov $597, %ecx
1:  mov $0x34, %al; out %al, $0x43                     /* counter 0, lobyte/hibyte, mode 2 */
    mov %cl, %al; out %al, $0x40
    mov %ch, %al; out %al, $0x40
spin:
    sti
2:  jmp 2b

isr:
    incl COUNTER
    mov $0x20, %al
    out %al, $0x20                                     /* EOI */
    mov $0x90000, %esp
    jmp spin

    idt_table
