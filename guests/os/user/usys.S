/* usys.S: one stub per system call.  cdecl arguments are moved into EBX,
 * ECX, EDX (EBX is callee-saved, so it is preserved around INT 0x80). */
#include "syscall.h"

.macro SYSCALL name, num
    .globl \name
\name:
    pushl %ebx
    movl 8(%esp), %ebx
    movl 12(%esp), %ecx
    movl 16(%esp), %edx
    movl $\num, %eax
    int $0x80
    popl %ebx
    ret
.endm

    .text
    SYSCALL write, SYS_write
    SYSCALL exit, SYS_exit
    SYSCALL getpid, SYS_getpid
    SYSCALL yield, SYS_yield
    SYSCALL fork, SYS_fork
    SYSCALL wait, SYS_wait
    SYSCALL sbrk, SYS_sbrk
    SYSCALL map, SYS_map
    SYSCALL unmap, SYS_unmap
    SYSCALL time, SYS_time
    SYSCALL catch, SYS_catch

/* divzero_handler: entered by the kernel on a divide error as if the
 * faulting DIV had called it: the faulting EIP is on top of the stack.
 * The divzero workload's DIV is the 2-byte "divl %ecx", so resume after
 * it.  Only the flags change (and DIV leaves those undefined anyway). */
    .globl divzero_handler, divzero_caught
divzero_handler:
    addl $2, (%esp)
    incl divzero_caught
    ret

    .data
    .align 4
divzero_caught:
    .long 0
