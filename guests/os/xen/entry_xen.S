/* entry_xen.S: where the hypervisor leaves a paravirtual tvos.
 *
 * As Xen starts a PV kernel (xen.h, "start of day"): paging on, ring 1 on
 * the flat ring-1 segments, events masked, ESI = start_info.  Switch to
 * our own boot stack and hand start_info to xen_start (cpuops_xen.c), which
 * connects to the hypervisor and calls kmain as a Multiboot loader would.
 * The ELF notes tell the domain builder who we are and where the
 * hypercall page goes (elfnote.h). */
#define XEN_ELFNOTE(type, desc...) \
    .pushsection .note.Xen, ""; .balign 4; .long 4f - 3f; .long 6f - 5f; .long type; \
    3: .asciz "Xen"; 4: .balign 4; 5: desc; 6: .balign 4; .popsection

    XEN_ELFNOTE(6, .asciz "tvos")             /* GUEST_OS */
    XEN_ELFNOTE(5, .asciz "xen-3.0")          /* XEN_VERSION */
    XEN_ELFNOTE(8, .asciz "generic")          /* LOADER */
    XEN_ELFNOTE(1, .long _start)              /* ENTRY */
    XEN_ELFNOTE(2, .long hypercall_page)      /* HYPERCALL_PAGE */

    .section .boot.text, "ax"
    .globl _start
_start:
    movl $boot_stack_top, %esp
    xorl %ebp, %ebp
    pushl %esi
    call xen_start
1:  jmp 1b

    .bss
    .align 16
    .globl boot_stack_top
boot_stack:
    .space 16384
boot_stack_top:

    .text
    .balign 4096
    .globl hypercall_page
hypercall_page:                 /* filled by the domain builder: 128 stubs of 32 bytes */
    .space 4096
