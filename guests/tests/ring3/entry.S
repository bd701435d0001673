/* Trap entry and the ring-3 side of the ring3 test kernel. */
    .text

/* Common frame for every trap: push a vector (and a zero error code where
 * the CPU pushes none), save registers, call trap(frame), restore, IRET. */
    .globl gp_entry, syscall_entry, other_entry
gp_entry:                     /* #GP pushes an error code */
    pushl $13
    jmp trap_common
syscall_entry:
    pushl $0
    pushl $0x80
    jmp trap_common
other_entry:
    pushl $0
    pushl $0xff
trap_common:
    pushal
    pushl %ds
    pushl %es
    movw $0x10, %ax           /* kernel data: the user's DS is not ours */
    movw %ax, %ds
    movw %ax, %es
    pushl %esp                /* struct frame * */
    cld
    call trap
    addl $4, %esp
    popl %es
    popl %ds
    popal
    addl $8, %esp             /* vector, error code */
    iret

/* enter_user(eip, esp): build an inter-privilege IRET frame and take it. */
    .globl enter_user
enter_user:
    movl 4(%esp), %ecx        /* user EIP */
    movl 8(%esp), %edx        /* user ESP */
    movw $0x23, %ax
    movw %ax, %ds
    movw %ax, %es
    pushl $0x23               /* SS, RPL 3 */
    pushl %edx                /* ESP */
    pushl $0x002              /* EFLAGS: IF=0, IOPL=0 */
    pushl $0x1b               /* CS, RPL 3 */
    pushl %ecx                /* EIP */
    iret

/* ---- user mode from here on (runs at CPL 3) ---- */
#define SYS_WRITE 1
#define SYS_EXIT  2
#define SYS_CPL   3
    .globl user_main
user_main:
    movl $SYS_WRITE, %eax
    movl $msg_hello, %ebx
    movl $msg_hello_len, %ecx
    int $0x80

    /* Report our own CPL from the RPL of CS (a sensitive read: MOV from CS). */
    movl %cs, %ebx
    andl $3, %ebx
    movl $SYS_CPL, %eax
    int $0x80

    /* CLI is privileged at CPL 3 with IOPL 0: the kernel sees #GP, skips it. */
    cli

    movl $SYS_WRITE, %eax
    movl $msg_back, %ebx
    movl $msg_back_len, %ecx
    int $0x80

    movl $SYS_EXIT, %eax
    movl $0, %ebx
    int $0x80
1:  jmp 1b                    /* not reached */

    .section .rodata
msg_hello:
    .ascii "ring3: hello from ring 3 via int 0x80\n"
    .set msg_hello_len, . - msg_hello
msg_back:
    .ascii "ring3: resumed after the #GP\n"
    .set msg_back_len, . - msg_back
