/* trapasm.S: the IDT's entry points.
 *
 * Each vector's stub makes the stack look the same: the CPU has pushed
 * EIP, CS, EFLAGS (plus ESP, SS when coming from ring 3, and an error code
 * for some exceptions); the stub pushes a dummy error code where the CPU
 * did not, then the vector number, and jumps to cpu_trap_entry (CPU-ops
 * layer), which saves the rest as a struct trapframe (x86.h), loads the
 * kernel's segments and calls trap(tf). */

.macro VEC_NOERR n
    .globl vector\n
vector\n:
    pushl $0
    pushl $\n
    jmp cpu_trap_entry
.endm
.macro VEC_ERR n
    .globl vector\n
vector\n:
    pushl $\n
    jmp cpu_trap_entry
.endm

    .text
.irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    VEC_NOERR \n
.endr
.irp n, 8,10,11,12,13,14,17
    VEC_ERR \n
.endr
.irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,128,129
    VEC_NOERR \n
.endr

/* The vectors the IDT uses, in one table for trap_init(); 0 = none. */
    .section .rodata
    .align 4
    .globl vectors
vectors:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long vector\n
.endr
.irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .long vector\n
.endr
    .globl vector_syscall, vector_probe
vector_syscall:
    .long vector128
vector_probe:
    .long vector129
