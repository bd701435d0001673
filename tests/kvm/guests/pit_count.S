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
    .set COUNTER, 0x7000
    .set COUNT, 0x7004
    .text
    .globl _start
header:
    .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
    .long header, header, 0, 0, _start
_start:
    mov $0x90000, %esp
    mov $isr, %eax
    mov $(idt + 0x20 * 8), %edi
    movw %ax, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8E00, 4(%edi)
    shr $16, %eax
    movw %ax, 6(%edi)
    lidt idtr
    movl $0, COUNTER
    mov $0x11, %al; out %al, $0x20; out %al, $0xA0     /* ICW1 */
    mov $0x20, %al; out %al, $0x21                     /* ICW2 */
    mov $0x28, %al; out %al, $0xA1
    mov $0x04, %al; out %al, $0x21                     /* ICW3 */
    mov $0x02, %al; out %al, $0xA1
    mov $0x01, %al; out %al, $0x21; out %al, $0xA1     /* ICW4 */
    mov $0xFE, %al; out %al, $0x21                     /* only IRQ 0 */
    mov $0xFF, %al; out %al, $0xA1
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

    .align 8
idtr:
    .word 256 * 8 - 1
    .long idt
    .align 8
idt:
    .fill 256 * 8, 1, 0
