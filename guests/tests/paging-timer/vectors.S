/* Interrupt entry stubs.  Exceptions 0-31 go to one stub that records the
 * vector and calls exception(); IRQ 0 (vector 0x20) counts a tick. */
    .text
.macro EXC vec
    .globl exc\vec
exc\vec:
    pushl $\vec
    jmp exc_common
.endm
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    EXC \v
.endr

exc_common:
    call exception            /* never returns: prints and exits */
1:  hlt
    jmp 1b

    .globl irq0_entry
irq0_entry:
    pushal
    cld
    call timer_tick
    popal
    iret
