"""IOPL-sensitive instructions: IN/OUT/INS/OUTS against IOPL and the TSS I/O
permission bitmap, CLI/STI against IOPL, and POPF/IRET/PUSHF's treatment of
IF and IOPL, at every CPL and IOPL.

Ports: 0x80-0x83 (POST and DMA page registers; only written), 0x3ff (the
COM1 scratch register; written and read back, never with a word or dword
access: QEMU's UART asserts on those) and 0x21 (the master PIC's
mask, 0xff after the harness's set-up).  The bitmap allows 0x80, 0x81 and
0x3ff unless a case says otherwise.
"""

from tests.system.common import LARGE, Case, case_test
from tests.system.harness.runner import AC, DF, ID, IF

T = "io"
CASES: list[Case] = []
ALL = (0, 1, 2, 3)
PAIRS = [(c, i) for c in ALL for i in ALL] if LARGE else \
    [(0, 0), (1, 0), (1, 1), (2, 1), (3, 0), (3, 2), (3, 3)]

IO = """
    mov $0x12345678, %eax
    mov $0x80, %dx
    outb %al, %dx
    outw %ax, %dx
    outl %eax, %dx
    mov $0x81, %dx
    outw %ax, %dx
    outb %al, %dx
    outb %al, $0x82
    outb %al, $0x80
    mov $0x3ff, %dx
    mov $0xa5, %al
    outb %al, %dx
    xor %eax, %eax
    inb %dx, %al
    mov %eax, %ebx
    xor %eax, %eax
    inb $0x21, %al
    mov %eax, %ecx
    mov $0x3fe, %dx
    mov $0x3c3c, %ax
    outb %al, $0x3ff
    lea data, %esi
    mov $0x80, %dx
    mov $2, %ecx
    rep outsb
    mov $0x3ff, %dx
    lea data+0x40, %edi
    mov $3, %ecx
    rep insb
    mov $0x80, %dx
    outsw
    outsl
"""
for cpl, iopl in PAIRS:
    CASES.append(Case(f"io-bitmap-cpl{cpl}-iopl{iopl}", IO, cpl=cpl, iopl=iopl, topic=T,
                      io_allow=((0x80, 2), (0x3ff, 1)), data=".long 0x44332211"))
# No bitmap (base beyond the TSS limit), a bitmap cut by the limit (Intel
# reads two bytes of it for every check), an empty allow list.
CASES.append(Case("io-no-bitmap", IO, cpl=3, topic=T, iomap_base=0x3000))
CASES.append(Case("io-bitmap-cut", IO, cpl=3, topic=T, io_allow=((0x80, 2), (0x3ff, 1)),
                  tss_limit=0x68 + 0x10))
CASES.append(Case("io-bitmap-cut-edge", IO, cpl=3, topic=T, io_allow=((0x80, 2), (0x3ff, 1)),
                  tss_limit=0x68 + 0x11))
CASES.append(Case("io-bitmap-all-denied", IO, cpl=3, topic=T))
CASES.append(Case("io-bitmap-base-offset", IO, cpl=3, topic=T, io_allow=((0x80, 2), (0x3ff, 1)),
                  iomap_base=0x60))

# CLI/STI: #GP unless CPL <= IOPL.
CLI_STI = """
    cli
    pushf
    pop %ebx
    sti
    pushf
    pop %ecx
    cli
    sti
    pushf
    pop %edx
"""
for cpl, iopl in [(c, i) for c in ALL for i in ALL]:
    CASES.append(Case(f"cli-sti-cpl{cpl}-iopl{iopl}", CLI_STI, cpl=cpl, iopl=iopl, topic=T,
                      eflags=IF if (cpl + iopl) % 2 else 0))

# POPF: IF changes only if CPL <= IOPL, IOPL only at CPL 0; the other flags
# (DF, AC, ID, the arithmetic ones) always; VM/VIF/VIP/RF never.  16- and
# 32-bit forms.
POPF = """
    pushf
    pop %eax
    mov %eax, %esi
    xor $0x3200 | 0x400 | 0x40000 | 0x200000 | 0xd5, %eax
    or $0x1a0000, %eax
    push %eax
    popf
    pushf
    pop %ebx
    push %esi
    popf
    pushfw
    popw %cx
    xor $0x3600, %cx
    pushw %cx
    popfw
    pushf
    pop %edx
    push %esi
    popf
"""
for cpl, iopl in [(c, i) for c in ALL for i in ALL]:
    CASES.append(Case(f"popf-cpl{cpl}-iopl{iopl}", POPF, cpl=cpl, iopl=iopl, topic=T,
                      eflags=IF if cpl % 2 else 0))
# PUSHF never shows RF or VM; what it shows of IF/IOPL is the real value.
CASES.append(Case("pushf-values", """
    pushf
    pop %eax
    pushfw
    pop %bx
    std
    pushf
    pop %ecx
    cld
""", cpl=3, iopl=2, eflags=IF | AC | ID | DF, topic=T))

test_case = case_test(CASES)
