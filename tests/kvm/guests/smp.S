/* smp: start every processor the ACPI MADT lists, with INIT-SIPI-SIPI through the local APIC.
 *
 * Multiboot (a.out kludge) at 1 MiB, ring 0, no paging, no IRET anywhere.
 * The bootstrap processor
 *   1. finds the RSDP in 0xE0000-0xFFFFF (ACPI 6.5 section 5.2.5.1), follows
 *      the RSDT to the MADT ("APIC") and lists its enabled Processor Local
 *      APIC structures (5.2.12.2): "madt: N cpus, apic ids: ...";
 *   2. prints its own APIC ID from CPUID leaf 1 EBX[31:24] and from the local
 *      APIC's ID register (0xFEE00020, bits 31:24);
 *   3. copies the real-mode trampoline to 0x8000, software-enables its local
 *      APIC and sends INIT, then SIPI twice with vector 0x08, to all
 *      processors but itself (Intel SDM Vol. 3A 8.4.4.1, "Typical BSP
 *      Initialization Sequence"; ICR at 0xFEE00300, destination shorthand 11);
 *   4. waits until N-1 processors have checked in, or gives up after a long
 *      spin, and prints "up: K aps" and, for every AP in check-in order,
 *      the APIC ID its CPUID reported;
 *   5. leaves through isa-debug-exit with 0 (exit status 1).
 * Each AP runs the trapvisor-free trampoline in real mode: CPUID leaf 1, then
 * a locked increment of the check-in count, its APIC ID stored in the slot it
 * got, and CLI; HLT for good.
 */
    .code32
    .include "guest.inc"

    .set TRAMPOLINE, 0x8000
    .set MAILBOX, 0x7000            /* u16 count at +0, u8 apic ids from +0x10 */
    guest_entry
    movw $0, MAILBOX
    /* 1. the MADT */
    mov $0xE0000, %esi
1:  cmpl $0x20445352, (%esi)        /* "RSD " */
    jne 2f
    cmpl $0x20525450, 4(%esi)       /* "PTR " */
    je 3f
2:  add $16, %esi
    cmp $0x100000, %esi
    jb 1b
    mov $no_rsdp, %esi
    call puts
    jmp done
3:  mov 16(%esi), %ebx              /* RsdtAddress */
    mov 4(%ebx), %ecx               /* RSDT length */
    lea 36(%ebx), %edi
    add %ebx, %ecx
4:  cmp %ecx, %edi
    jae nomadt
    mov (%edi), %edx
    cmpl $0x43495041, (%edx)        /* "APIC" */
    je 5f
    add $4, %edi
    jmp 4b
nomadt:
    mov $no_madt, %esi
    call puts
    jmp done
5:  mov 4(%edx), %ecx               /* MADT length */
    add %edx, %ecx
    lea 44(%edx), %edi
    xor %ebp, %ebp                  /* enabled processors */
6:  cmp %ecx, %edi
    jae 8f
    cmpb $0, (%edi)                 /* type 0: Processor Local APIC */
    jne 7f
    testb $1, 4(%edi)               /* flags.Enabled */
    jz 7f
    movzbl 3(%edi), %eax            /* APIC ID */
    mov %al, madt_ids(%ebp)
    inc %ebp
7:  movzbl 1(%edi), %eax
    add %eax, %edi
    jmp 6b
8:  mov $s_madt, %esi
    call puts
    mov %ebp, %eax
    call puthex
    mov $s_cpus, %esi
    call puts
    xor %ebx, %ebx
9:  cmp %ebp, %ebx
    jae 10f
    mov $' ', %al
    call putc
    movzbl madt_ids(%ebx), %eax
    call puthex
    inc %ebx
    jmp 9b
10: mov $'\n', %al
    call putc
    /* 2. who am I */
    mov $s_bsp, %esi
    call puts
    mov $1, %eax
    cpuid
    mov %ebx, %eax
    shr $24, %eax
    call puthex
    mov $s_lapic, %esi
    call puts
    mov 0xFEE00020, %eax
    shr $24, %eax
    call puthex
    mov $'\n', %al
    call putc
    /* 3. start the APs */
    mov $ap_start, %esi
    mov $TRAMPOLINE, %edi
    mov $(ap_end - ap_start), %ecx
    rep movsb
    orl $0x1FF, 0xFEE000F0           /* SVR: APIC software-enabled, spurious vector 0xFF */
    movl $0, 0xFEE00310
    movl $0x000C4500, 0xFEE00300     /* INIT, level assert, all excluding self */
    call delay
    movl $0x000C4608, 0xFEE00300     /* start-up IPI, vector 0x08: CS:IP = 0800:0000 */
    call delay
    movl $0x000C4608, 0xFEE00300
    /* 4. wait for them */
    lea -1(%ebp), %edx
    mov $20000000, %ecx
11: movzwl MAILBOX, %eax
    cmp %edx, %eax
    jae 12f
    pause
    loop 11b
12: mov $s_up, %esi
    call puts
    movzwl MAILBOX, %eax
    call puthex
    mov $s_aps, %esi
    call puts
    movzwl MAILBOX, %ebp
    xor %ebx, %ebx
13: cmp %ebp, %ebx
    jae 14f
    mov $' ', %al
    call putc
    movzbl (MAILBOX + 0x10)(%ebx), %eax
    call puthex
    inc %ebx
    jmp 13b
14: mov $'\n', %al
    call putc
done:
    mov $0, %al
    out %al, $0xf4
    cli
15: hlt
    jmp 15b

delay:                               /* a short spin between the IPIs */
    push %ecx
    mov $20000, %ecx
16: pause
    loop 16b
    pop %ecx
    ret

    serial_routines

    .code16
ap_start:                            /* copied to 0x8000; runs in real mode with CS = 0x800 */
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov $1, %ax
    lock xadd %ax, MAILBOX
    mov %ax, %si
    mov %bl, (MAILBOX + 0x10)(%si)
21: cli
    hlt
    jmp 21b
ap_end:
    .code32


no_rsdp: .asciz "no rsdp\n"
no_madt: .asciz "no madt\n"
s_madt:  .asciz "madt: "
s_cpus:  .asciz " cpus, apic ids:"
s_bsp:   .asciz "bsp: cpuid apic id "
s_lapic: .asciz ", lapic id "
s_up:    .asciz "up: "
s_aps:   .asciz " aps, cpuid apic ids:"
madt_ids: .fill 256, 1, 0
