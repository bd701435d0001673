"""The 17 sensitive-but-unprivileged instructions of Robin and Irvine (2000)
(USENIX Security 2000): SGDT, SIDT, SLDT, SMSW, PUSHF,
POPF, LAR, LSL, VERR, VERW, POP Sreg, PUSH Sreg, far CALL, far JMP, INT n,
far RET, STR, and MOV to/from a segment register - each at CPL 0 and CPL 3
under IOPL 0 and 3 (every CPL and IOPL with TVSYS_LARGE=1).  None of them
traps at CPL 3; what they return or do is what betrays the ring the code
runs in, and the dumps must agree on every bit of it.
"""

from tests.system.common import Case, LARGE, case_test
from tests.system.harness.runner import IF

T = "sensitive"
CASES: list[Case] = []
CPLS = (0, 1, 2, 3) if LARGE else (0, 3)
IOPLS = (0, 1, 2, 3) if LARGE else (0, 3)

# Selectors for the protection-system references (LAR, LSL, VERR, VERW):
# every kind of descriptor, with RPL 0 and 3, null, LDT, beyond the limits.
SELECTORS = [
    "0", "3", "KCODE", "KDATA", "KDATA|3", "UCODE|3", "UDATA|3", "UDATA", "R1CODE|1", "R1DATA|1",
    "R2DATA|2", "TSSSEL", "LDTSEL", "CGATE3", "CGATE0", "CGATENP", "CONF0", "CONF0|3", "CONF3|3",
    "EXPDOWN|3", "NPDATA|3", "RODATA|3", "SMALL|3", "XOCODE|3", "TSS2SEL", "TSS2SEL|3",
    "CGATE1", "TASKGATE", "UDATANA|3", "KDATARO", "NPCODE", "SPARE0", "SPARE1", "0x100",
    "0xfffb", "LDATA3|3", "LCODE3|3", "LNPDATA|3", "LDATA0", "LDATA0|3", "0x27",
]
# A 16-bit TSS (available) and an LDT descriptor with DPL 3 in the spare
# slots, so that LAR/LSL see those system types too.
from tests.system.harness.runner import gdt_seg  # noqa: E402
SPARES = (gdt_seg(0xE8, "tss2", 0x2B, 0xE1, 0x0), gdt_seg(0xF0, "ldt", 0x1F, 0xE2, 0x0))


def prot_refs(op: str) -> str:
    """``op`` on every selector; the result register and ZF go to the data page."""
    out = []
    for i, sel in enumerate(SELECTORS):
        out.append(f"    mov ${sel}, %eax")
        out.append("    mov $0xeeeeeeee, %ebx")
        if op in ("lar", "lsl"):
            out.append(f"    {op} %ax, %ebx")
        else:
            out.append(f"    {op} %ax")
        out.append("    setz %cl")
        out.append(f"    mov %ebx, data+{8 * i:#x}")
        out.append(f"    mov %cl, data+{8 * i + 4:#x}")
    return "\n".join(out)


BODIES = {
    "sgdt": """
    sgdt data
    sgdtw data+8
    sgdt data+0x11
""",
    "sidt": """
    sidt data
    sidtw data+8
    sidt data+0x11
""",
    "sldt": """
    sldt data
    sldt %eax
    sldt %bx
    mov $0xffffffff, %ecx
    sldt %cx
""",
    "str": """
    str data
    str %eax
    mov $0xffffffff, %ebx
    str %bx
""",
    "smsw": """
    smsw data
    smsw %eax
    mov $0xffffffff, %ebx
    smsw %bx
""",
    "pushf": """
    pushf
    pop %eax
    pushfw
    pop %bx
""",
    "popf": """
    push $0x3ed7
    popf
    pushf
    pop %eax
    push $0x0002
    popf
    pushf
    pop %ebx
    pushw $0x3200
    popfw
    pushf
    pop %ecx
""",
    "lar": prot_refs("lar"),
    "lsl": prot_refs("lsl"),
    "verr": prot_refs("verr"),
    "verw": prot_refs("verw"),
    "push-sreg": """
    movl $0, -4(%esp)
    movl $0, -8(%esp)
    movl $0, -12(%esp)
    movl $0, -16(%esp)
    push %cs
    pop %eax
    push %ss
    pop %ebx
    pushw %ds
    pop %cx
    pushw %es
    pushw %fs
    pushw %gs
    pop %edx
    pop %esi
""",
    "pop-sreg": """
    push $UDATA|3
    pop %ds
    push $KDATA
    pop %es
    pushw $UDATA2|3
    popw %fs
    push $0
    pop %gs
    push %ss
    pop %ss
    mov %ds, %eax
    mov %es, %ebx
    mov %fs, %ecx
    mov %gs, %edx
""",
    "mov-sreg": """
    mov %cs, %eax
    mov %ss, %ebx
    mov %ds, %cx
    mov %cs, data
    mov $UDATA|3, %dx
    mov %dx, %ds
    mov $KDATA, %si
    mov %si, %es
    mov $0xffff0023, %edi
    mov %edi, %fs
    mov %es, %esi
    mov %fs, %edi
""",
    "call-far": """
    lcall $UCODE|3, $1f
    jmp 2f
1:  mov %cs, %eax
    lret
2:  lcall $KCODE, $1b
    lcall $CONF0, $1b
    lcall $CGATE3, $0
    mov %cs, %ebx
""",
    "jmp-far": """
    ljmp $UCODE|3, $1f
1:  mov %cs, %eax
    ljmp $KCODE, $2f
2:  mov %cs, %ebx
    ljmp $CONF0, $3f
3:  mov %cs, %ecx
""",
    "ret-far": """
    push %cs
    push $1f
    lret
1:  push $UDATA|3
    push $0x403e00
    push $UCODE|3
    push $2f
    lret
2:  mov %cs, %eax
    mov %ss, %ebx
    mov %esp, %ecx
""",
    "int-n": """
    int $V_TRAP3
    int $V_INT0
    int $0x40
    int $V_RING1
    mov $1, %eax
""",
}
CGT0 = """
cgt0:
    mov %cs, %edx
    mov %ss, %esi
    lret
"""

for name, body in BODIES.items():
    for cpl in CPLS:
        for iopl in IOPLS:
            CASES.append(Case(f"sensitive-{name}-cpl{cpl}-iopl{iopl}", body, cpl=cpl, iopl=iopl,
                              eflags=IF, topic=T, pokes=SPARES,
                              extra=CGT0 if name == "call-far" else ""))

# A selector in a 32-bit register's low half: the upper half is ignored
# (iced decodes the register forms with 32-bit registers).
for cpl in (0, 3):
    CASES.append(Case(f"sensitive-selector-upper-bits-cpl{cpl}", """
    mov $0xdead0008, %eax
    verr %ax
    setz %bl
    verw %ax
    setz %bh
    mov $0xbeef0023, %edx
    lar %dx, %ecx
    lsl %dx, %esi
    mov $0xfeed0050, %edi
    lldt %di
    mov $0xcafe00a8, %edi
    ltr %di
    str %edi
""", cpl=cpl, topic=T))

# The same instructions under paging, where the TSS/GDT values differ from the
# physical ones only if the harness mapped them elsewhere (it does not), and
# SMSW after CLTS/LMSW changed CR0 (at CPL 0).
CASES.append(Case("sensitive-smsw-after-lmsw", """
    lmsw %ax
    smsw %ebx
    mov $0xe, %ax
    lmsw %ax
    smsw %ecx
    clts
    smsw %edx
    mov %cr0, %esi
""", cpl=0, topic=T, regs={"eax": 0xfff0}))

test_case = case_test(CASES)
