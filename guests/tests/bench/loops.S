/* The timed loops of the bench kernel, in assembly so that the instruction
 * count of each iteration is fixed (benchmarks/vs_qemu.py divides by it). */
    .text

/* u32 alu_loop(u32 n): 8 instructions an iteration; returns n(n+1)/2 mod 2^32. */
    .globl alu_loop
alu_loop:
    push %ebx
    push %esi
    mov 12(%esp), %ecx
    xor %eax, %eax
    mov $0x12345678, %ebx
    xor %esi, %esi
1:  add %ecx, %eax
    xor %eax, %ebx
    rol $3, %ebx
    lea (%ebx,%ecx), %edx
    sub %edx, %esi
    and $0x7fffffff, %esi
    dec %ecx
    jnz 1b
    pop %esi
    pop %ebx
    ret

/* u32 call_loop(u32 n): CALL, ADD, RET, DEC, JNZ (5 an iteration); returns n(n+1)/2. */
    .globl call_loop
call_loop:
    mov 4(%esp), %ecx
    xor %eax, %eax
1:  call leaf
    dec %ecx
    jnz 1b
    ret
leaf:
    add %ecx, %eax
    ret

/* u32 sweep_loop(u32 *buf, u32 words, u32 rounds): every word is read, added to the sum,
 * incremented and stored back (7 instructions a word); with a zeroed buffer the sum is
 * words * rounds(rounds-1)/2. */
    .globl sweep_loop
sweep_loop:
    push %ebx
    push %esi
    push %edi
    mov 20(%esp), %edi
    shl $2, %edi
    add 16(%esp), %edi            /* end of the buffer */
    mov 24(%esp), %ebx            /* rounds */
    xor %eax, %eax
2:  mov 16(%esp), %esi
1:  mov (%esi), %edx
    add %edx, %eax
    inc %edx
    mov %edx, (%esi)
    add $4, %esi
    cmp %edi, %esi
    jb 1b
    dec %ebx
    jnz 2b
    pop %edi
    pop %esi
    pop %ebx
    ret

/* void stos_loop(u32 *buf, u32 words, u32 rounds): REP STOSD of the round's value
 * (0x5a5a0000 + round, rounds counted from 1) over the buffer, rounds times. */
    .globl stos_loop
stos_loop:
    push %edi
    push %ebx
    mov 20(%esp), %ebx
    mov $0x5a5a0000, %eax
    cld
1:  inc %eax
    mov 12(%esp), %edi
    mov 16(%esp), %ecx
    rep stosl
    dec %ebx
    jnz 1b
    pop %ebx
    pop %edi
    ret

/* void movs_loop(u32 *dst, const u32 *src, u32 words, u32 rounds): REP MOVSD, rounds times. */
    .globl movs_loop
movs_loop:
    push %edi
    push %esi
    push %ebx
    mov 28(%esp), %ebx
    cld
1:  mov 16(%esp), %edi
    mov 20(%esp), %esi
    mov 24(%esp), %ecx
    rep movsl
    dec %ebx
    jnz 1b
    pop %ebx
    pop %esi
    pop %edi
    ret

/* INT 0x80 from ring 3 and back: the gate (DPL 3, interrupt gate) switches to the TSS's
 * ring-0 stack; the handler loads the kernel's DS, counts, restores DS and IRETs to ring 3.
 * The user loop runs ECX round trips, then INT 0x81 ends the workload in the kernel. */
    .globl int80_entry, int81_entry, user_int_loop, enter_user
    .globl int_count
int80_entry:
    push %eax
    push %ds
    mov $0x10, %eax
    mov %eax, %ds
    incl int_count
    pop %ds
    pop %eax
    iret
int81_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    cld
    call int_done                 /* does not return */
2:  jmp 2b

user_int_loop:                    /* ring 3, ECX = round trips */
1:  int $0x80
    dec %ecx
    jnz 1b
    int $0x81
3:  jmp 3b

/* enter_user(u32 eip, u32 esp, u32 ecx): IRET to ring 3 with ECX set. */
enter_user:
    mov 4(%esp), %eax
    mov 8(%esp), %edx
    mov 12(%esp), %ecx
    mov $0x23, %ebx
    mov %ebx, %ds
    mov %ebx, %es
    push $0x23                    /* SS */
    push %edx                     /* ESP */
    push $0x002                   /* EFLAGS: IF=0, IOPL=0 */
    push $0x1b                    /* CS */
    push %eax                     /* EIP */
    iret

    .data
    .align 4
int_count:
    .long 0

    .text
    .globl other_entry
other_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    call bad_trap
4:  jmp 4b
