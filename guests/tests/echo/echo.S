/* echo: a guest whose output depends on *when* its input arrives.
 *
 * Polls COM1 for received bytes (LSR bit 0, data ready).  For each byte it
 * prints the byte and the time it arrived (RDTSC, bits 31:0, in hex), and
 * at 'q' it leaves through the debug-exit port with value 0.  Run twice
 * with the same input typed at other moments, the output differs; replayed
 * from a recording (trapvisor run --replay), it is the same.
 */
#define MB_MAGIC  0x1BADB002
#define MB_FLAGS  0x00000003
#define COM1      0x3f8
#define EXIT_PORT 0xf4

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .globl _start
_start:
    cli
    movl $stack_top, %esp
    call serial_init
    movl $banner, %esi
    call puts

wait:
    movw $COM1+5, %dx
    inb %dx, %al
    testb $0x01, %al             /* LSR.DR: a byte has arrived */
    jz wait
    movw $COM1, %dx
    inb %dx, %al
    movb %al, %cl
    cmpb $'q', %cl
    je done
    call putc                    /* the byte, then " @" and the time */
    movb $' ', %al
    call putc
    movb $'@', %al
    call putc
    rdtsc
                                 /* bits 31:0 of the TSC */
    call puthex
    movb $'\n', %al
    call putc
    jmp wait

done:
    movl $bye, %esi
    call puts
    movw $EXIT_PORT, %dx
    movb $0, %al
    outb %al, %dx
1:  hlt
    jmp 1b

serial_init:
    movw $COM1+1, %dx; movb $0x00, %al; outb %al, %dx
    movw $COM1+3, %dx; movb $0x80, %al; outb %al, %dx
    movw $COM1+0, %dx; movb $0x01, %al; outb %al, %dx
    movw $COM1+1, %dx; movb $0x00, %al; outb %al, %dx
    movw $COM1+3, %dx; movb $0x03, %al; outb %al, %dx
    movw $COM1+2, %dx; movb $0xc7, %al; outb %al, %dx
    movw $COM1+4, %dx; movb $0x03, %al; outb %al, %dx
    ret

/* puts: the NUL-terminated string at ESI. */
puts:
    lodsb
    testb %al, %al
    jz 1f
    call putc
    jmp puts
1:  ret

/* puthex: EAX as eight hex digits. */
puthex:
    movl %eax, %ebx
    movl $8, %edi
1:  roll $4, %ebx
    movl %ebx, %eax
    andl $0xf, %eax
    movb hexdigits(%eax), %al
    call putc
    decl %edi
    jnz 1b
    ret

/* putc: AL, once the transmit holding register is empty (EDX, AH clobbered). */
putc:
    movb %al, %ah
    movw $COM1+5, %dx
1:  inb %dx, %al
    testb $0x20, %al
    jz 1b
    movw $COM1, %dx
    movb %ah, %al
    outb %al, %dx
    ret

    .section .rodata
banner:    .asciz "echo: type; q ends\n"
bye:       .asciz "bye\n"
hexdigits: .ascii "0123456789abcdef"

    .bss
    .align 16
    .space 4096
stack_top:
