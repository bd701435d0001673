/* cpuid_dump: print every CPUID leaf the processor says it has, as the guest sees them.
 *
 * Multiboot (a.out kludge) at 1 MiB, ring 0.  One line per leaf and subleaf,
 * "LLLLLLLL.SS EAX EBX ECX EDX" in hex: the basic leaves 0 to CPUID.0:EAX
 * (subleaves 0-2 of leaves 4 and 0BH, Intel SDM Vol. 2A CPUID), the extended
 * leaves 80000000H to CPUID.80000000H:EAX when that is a valid extended leaf,
 * and the hypervisor leaves 40000000H-40000001H when CPUID.1:ECX bit 31 says a
 * hypervisor is present.  Then isa-debug-exit with 0.
 */
    .code32
    .include "guest.inc"
    guest_entry
    xor %eax, %eax
    cpuid
    mov %eax, %edi                  /* max basic leaf */
    xor %esi, %esi
1:  cmp %edi, %esi
    ja 3f
    xor %ebp, %ebp
2:  call dump
    cmp $4, %esi
    je 21f
    cmp $0xB, %esi
    jne 22f
21: inc %ebp
    cmp $3, %ebp
    jb 2b
22: inc %esi
    jmp 1b
3:  mov $0x80000000, %eax
    cpuid
    mov %eax, %edi
    cmp $0x80000000, %edi
    jb 5f
    cmp $0x800000FF, %edi
    ja 5f
    mov $0x80000000, %esi
4:  xor %ebp, %ebp
    call dump
    inc %esi
    cmp %edi, %esi
    jbe 4b
5:  mov $1, %eax
    cpuid
    test $0x80000000, %ecx
    jz 6f
    xor %ebp, %ebp
    mov $0x40000000, %esi
    call dump
    mov $0x40000001, %esi
    call dump
6:  mov $0, %al
    out %al, $0xf4
    cli
7:  hlt
    jmp 7b

dump:                               /* print leaf %esi subleaf %ebp */
    push %edi
    mov %esi, %eax
    call puthex32
    mov $'.', %al
    call putc
    mov %ebp, %eax
    call puthex
    mov %esi, %eax
    mov %ebp, %ecx
    cpuid
    push %edx
    push %ecx
    push %ebx
    push %eax
    mov $4, %edi
8:  mov $' ', %al
    call putc
    pop %eax
    call puthex32
    dec %edi
    jnz 8b
    mov $'\n', %al
    call putc
    pop %edi
    ret

    serial_routines
