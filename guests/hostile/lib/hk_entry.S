/* Trap entry stubs and the hk_try / hk_user trampolines of the hostile kernels. */
#define KCODE 0x08
#define KDATA 0x10
    .text

/* One 16-byte stub per vector (hk_stub_base + 16 * vector): push a zero
 * error code where the CPU pushes none, push the vector, build the frame. */
    .align 16
    .globl hk_stub_base
hk_stub_base:
    .set vec, 0
    .rept 256
    .align 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17)
    .else
    pushl $0
    .endif
    pushl $vec
    jmp hk_common
    .set vec, vec + 1
    .endr

hk_common:
    pushal
    pushl %es
    pushl %ds
    movw $KDATA, %ax
    movw %ax, %ds
    movw %ax, %es
    pushl %esp                 /* struct hk_frame * */
    cld
    call hk_trap
    addl $4, %esp
    popl %ds
    popl %es
    popal
    addl $8, %esp              /* vector, error code */
    iret


    .text
/* int hk_try(void (*fn)(u32), u32 arg) */
    .globl hk_try
hk_try:
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, hk_rec_esp
    movl $hk_recover, hk_rec_eip
    pushl 24(%esp)             /* arg */
    call *24(%esp)             /* fn */
    addl $4, %esp
    movl $0, hk_rec_eip
    movl $-1, %eax
    jmp hk_restore
hk_recover:                    /* the trap handler IRETs here at CPL 0 */
    movl hk_rec_esp, %esp
    movl hk_vec, %eax
hk_restore:
    lgdt hk_gdt_ptr
    lidt hk_idt_ptr
    ljmp $KCODE, $1f
1:  movw $KDATA, %cx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %fs
    movw %cx, %gs
    movw %cx, %ss
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

/* hk_user_enter(fn, eflags): IRET to fn at CPL 3 (called through hk_try). */
    .globl hk_user_enter
hk_user_enter:
    movl hk_user_fn, %ecx
    movl hk_user_eflags, %edx
    movw $0x23, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    pushl $0x23                /* SS */
    pushl $hk_user_stack_top   /* ESP */
    pushl %edx                 /* EFLAGS */
    pushl $0x1b                /* CS */
    pushl %ecx                 /* EIP */
    iret

    .globl hk_user_return
hk_user_return:
    movl $0, %eax
    int $0x80
1:  jmp 1b

    .bss
    .align 16
    .space 4096
hk_user_stack_top:
