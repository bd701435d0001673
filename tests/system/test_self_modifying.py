"""Self-modifying code: a store into an instruction ahead of the one that stores,
in the same translated block, is seen by the next instruction fetch.

P6-family and later processors detect a write to a code address already
prefetched or decoded and execute the new bytes (SDM Vol. 3A §8.1.3,
"Handling Self- and Cross-Modifying Code"); QEMU does the same.  Each case
patches code a few bytes after the store, so the patched instruction was
decoded in the same block as the store.  The loops run 300 times, so the
block tier compiles them (blockgen.HOT) and both tiers are exercised: the
closures on the first iterations, generated code after.
"""

from tests.system.common import Case, case_test

T = "self-modifying code"
CASES: list[Case] = [
    # The next instruction: a NOP becomes INC EAX.
    Case("smc-next-instruction", """
    xor %eax, %eax
    movb $0x40, smc1
smc1: nop
    """, topic=T),
    # In a loop: patch ahead, execute, patch back; EBX counts the patched executions.
    Case("smc-loop-patch-and-restore", """
    mov $300, %ecx
    xor %ebx, %ebx
1:  movb $0x43, smc2
smc2: nop
    movb $0x90, smc2
    dec %ecx
    jnz 1b
    """, topic=T),
    # Flags live across the store: CMP sets ZF, the store patches ahead, JZ reads ZF.
    Case("smc-flags-live-across-the-store", """
    mov $300, %ecx
    xor %ebx, %ebx
    xor %edx, %edx
1:  cmp %ecx, %ecx
    movb $0x43, smc3
smc3: nop
    jnz 2f
    inc %edx
2:  movb $0x90, smc3
    dec %ecx
    jnz 1b
    """, topic=T),
    # A string store (a closure, not generated code) patches the next instruction.
    Case("smc-rep-stosb-patches-ahead", """
    mov $300, %esi
    xor %ebx, %ebx
1:  lea smc4, %edi
    mov $0x43, %al
    mov $1, %ecx
    cld
    rep stosb
smc4: nop
    movb $0x90, smc4
    dec %esi
    jnz 1b
    """, topic=T),
    # An immediate operand patched: the second MOV must load the new value.
    Case("smc-immediate-operand", """
    mov $300, %ecx
    xor %edx, %edx
1:  mov %ecx, smc5 + 1
smc5: mov $0, %eax
    add %eax, %edx
    dec %ecx
    jnz 1b
    """, topic=T),
    # A store to data in the same page as the code changes nothing but the data.
    Case("smc-data-beside-code", """
    mov $300, %ecx
    xor %edx, %edx
1:  incl smcdata
    add smcdata, %edx
    dec %ecx
    jnz 1b
    jmp 2f
smcdata: .long 0
2:
    """, topic=T),
]

test_case = case_test(CASES)
