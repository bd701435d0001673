/* aout: a kernel that only the Multiboot "a.out kludge" can load.
 *
 * The build turns it into a flat binary (no ELF headers), so a loader must
 * use the address fields of the header (flags bit 16): header_addr,
 * load_addr, load_end_addr, bss_end_addr, entry_addr.  The kernel then checks
 * what the loader had to get right and prints one line per check:
 *   magic ok      EAX held 0x2BADB002 at entry
 *   data ok       the last word before load_end_addr was loaded
 *   bss ok        the bss up to bss_end_addr was zeroed
 *   entry ok      we entered at entry_addr, not at the start of the image
 * It exits with value 0 (QEMU exit code 1) if all passed, else value 1.
 */
#define MB_MAGIC  0x1BADB002
#define MB_FLAGS  0x00010003          /* bit 16: address fields are valid */
#define COM1      0x3f8
#define EXIT_PORT 0xf4

    .section .multiboot, "ax"
    /* load_addr: a loader that jumps here instead of entry_addr is caught.
     * This also puts the header at load_addr + 4, so header_addr and
     * load_addr differ as they may in general. */
    jmp wrong_entry
    .align 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header                   /* header_addr */
    .long _load_start                 /* load_addr */
    .long _load_end                   /* load_end_addr */
    .long _bss_end                    /* bss_end_addr */
    .long _start                      /* entry_addr */

wrong_entry:
    movl $stack_top, %esp
    call serial_init
    movl $msg_wrong_entry, %esi
    call puts
    movb $1, %al
    jmp exit

    .text
    .globl _start
_start:
    movl $stack_top, %esp
    movl %eax, %ebp                   /* keep the boot magic */
    call serial_init
    movl $msg_banner, %esi
    call puts
    xorl %edi, %edi                   /* EDI counts failures */

    cmpl $0x2BADB002, %ebp
    movl $msg_magic_ok, %esi
    je 1f
    movl $msg_magic_bad, %esi
    incl %edi
1:  call puts

    cmpl $0xC0FFEE42, last_data_word
    movl $msg_data_ok, %esi
    je 1f
    movl $msg_data_bad, %esi
    incl %edi
1:  call puts

    /* The 4 KiB below the stack must be zero (the stack is in use). */
    movl $bss_area, %ecx
    xorl %eax, %eax
2:  orb (%ecx), %al
    incl %ecx
    cmpl $stack_bottom, %ecx
    jb 2b
    testb %al, %al
    movl $msg_bss_ok, %esi
    jz 1f
    movl $msg_bss_bad, %esi
    incl %edi
1:  call puts

    movl $msg_entry_ok, %esi
    call puts

    movl %edi, %eax
    testl %eax, %eax
    jz exit
    movb $1, %al
exit:
    movw $EXIT_PORT, %dx
    outb %al, %dx
3:  hlt
    jmp 3b

serial_init:
    movw $COM1+1, %dx; movb $0x00, %al; outb %al, %dx
    movw $COM1+3, %dx; movb $0x80, %al; outb %al, %dx
    movw $COM1+0, %dx; movb $0x01, %al; outb %al, %dx
    movw $COM1+1, %dx; movb $0x00, %al; outb %al, %dx
    movw $COM1+3, %dx; movb $0x03, %al; outb %al, %dx
    movw $COM1+2, %dx; movb $0xc7, %al; outb %al, %dx
    movw $COM1+4, %dx; movb $0x03, %al; outb %al, %dx
    ret

/* Print the NUL-terminated string at ESI. */
puts:
    lodsb
    testb %al, %al
    jz 2f
    movb %al, %bl
    movw $COM1+5, %dx
1:  inb %dx, %al
    testb $0x20, %al
    jz 1b
    movw $COM1, %dx
    movb %bl, %al
    outb %al, %dx
    jmp puts
2:  ret

    .section .rodata
msg_banner:     .asciz "aout: loaded through the a.out kludge\n"
msg_magic_ok:   .asciz "aout: magic ok\n"
msg_magic_bad:  .asciz "aout: magic BAD\n"
msg_data_ok:    .asciz "aout: data ok\n"
msg_data_bad:   .asciz "aout: data BAD\n"
msg_bss_ok:     .asciz "aout: bss ok\n"
msg_bss_bad:    .asciz "aout: bss BAD\n"
msg_entry_ok:   .asciz "aout: entry ok\n"
msg_wrong_entry: .asciz "aout: entered at load_addr, not entry_addr\n"

    .data
    .align 4
    .space 60, 0x5a
last_data_word:
    .long 0xC0FFEE42                  /* last loaded word: checks load_end_addr */

    .bss
    .align 16
bss_area:
    .space 4096
stack_bottom:
    .space 4096
stack_top:
