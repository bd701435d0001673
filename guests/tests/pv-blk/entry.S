/* entry.S: a bare paravirtual kernel's entry (xen.h start of day: ring 1,
 * ESI = start_info) and the Xen ELF notes the domain builder needs. */
#define XEN_ELFNOTE(type, desc...) \
    .pushsection .note.Xen, ""; .balign 4; .long 4f - 3f; .long 6f - 5f; .long type; \
    3: .asciz "Xen"; 4: .balign 4; 5: desc; 6: .balign 4; .popsection

    XEN_ELFNOTE(6, .asciz "pv-blk")
    XEN_ELFNOTE(2, .long hypercall_page)

    .section .text.entry, "ax"
    .globl _start
_start:
    movl $stack_top, %esp
    pushl %esi
    call blk_main
1:  jmp 1b

    .text
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .space 4096

    .bss
    .balign 16
    .space 8192
stack_top:
