/* crt0.S: process entry.  The kernel starts init with ESP pointing at
 * main's two arguments (workload name, iterations), so a plain CALL makes
 * them main's parameters; main's return value becomes the exit status. */
    .section .text.start, "ax"
    .globl _start
_start:
    call main
    pushl %eax
    call exit
1:  jmp 1b
