/* hello: the smallest useful guest.
 *
 * Multiboot 1 kernel (ELF, loaded at 1 MiB).  Prints one line on COM1 with
 * polled output and leaves through the debug-exit port with value 0, which
 * QEMU's isa-debug-exit turns into process exit code (0 << 1) | 1 = 1.
 */
#define MB_MAGIC  0x1BADB002
#define MB_FLAGS  0x00000003          /* page-align modules, want memory info */
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

    movl $message, %esi
1:  lodsb
    testb %al, %al
    jz 2f
    call serial_putc
    jmp 1b

2:  movw $EXIT_PORT, %dx
    movb $0, %al
    outb %al, %dx
    /* Not on a machine with the exit device: stop here. */
3:  hlt
    jmp 3b

/* 16550 at COM1: 115200 baud (divisor 1), 8N1, FIFOs on, no interrupts. */
serial_init:
    movw $COM1+1, %dx; movb $0x00, %al; outb %al, %dx   /* IER: none */
    movw $COM1+3, %dx; movb $0x80, %al; outb %al, %dx   /* LCR: DLAB */
    movw $COM1+0, %dx; movb $0x01, %al; outb %al, %dx   /* DLL */
    movw $COM1+1, %dx; movb $0x00, %al; outb %al, %dx   /* DLM */
    movw $COM1+3, %dx; movb $0x03, %al; outb %al, %dx   /* LCR: 8N1 */
    movw $COM1+2, %dx; movb $0xc7, %al; outb %al, %dx   /* FCR */
    movw $COM1+4, %dx; movb $0x03, %al; outb %al, %dx   /* MCR: DTR RTS */
    ret

/* Send AL, waiting for the transmit holding register to be empty. */
serial_putc:
    movb %al, %bl
    movw $COM1+5, %dx
1:  inb %dx, %al
    testb $0x20, %al
    jz 1b
    movw $COM1, %dx
    movb %bl, %al
    outb %al, %dx
    ret

    .section .rodata
message:
    .asciz "Hello from trapvisor\n"

    .bss
    .align 16
    .space 4096
stack_top:
