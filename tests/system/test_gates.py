"""IDT gate types: interrupt vs trap gate (IF), gate DPL, not-present gates,
bad gate types and selectors, conforming and non-conforming targets at every
privilege level, the TSS stack switch, the IDT limit, 16-bit gates, and
software INT n to a vector whose exception pushes an error code.

Every snippet runs with IF=1, so the trap log's ``hfl`` (the handler's own
EFLAGS) shows whether the gate cleared IF.  The special vectors are listed
in harness/layout.h.
"""

from tests.system.common import Case, LARGE, case_test, variants
from tests.system.harness.runner import IF, TF, gdt_seg, idt_gate

T = "gates"
CASES: list[Case] = []

VECTORS = ["V_TRAP3", "V_INT3", "V_INT0", "V_NP3", "V_RING1", "V_CONF0", "V_RING2", "V_CONF3",
           "V_BADTYPE", "V_NULLSEL", "V_DATASEL", "V_NPCODE", "V_RING3"]

# Each special vector from every CPL: the trap log shows the gate checks
# (#GP(vector*8+2), #NP, #GP(selector)), the new CS/SS:ESP and IF in the handler.
for v in VECTORS:
    CASES += variants(f"gate-{v[2:].lower()}", f"""
    mov $1, %eax
    int ${v}
    mov $2, %eax
    int ${v}
    mov $3, %eax
""", cpls=(0, 1, 2, 3), topic=T, eflags=IF)

# Hardware exceptions ignore the gate's DPL; INT n to the same vector does not.
CASES += variants("gate-exception-ignores-dpl", """
    xor %ecx, %ecx
    div %ecx
    int $0
    ud2
    int $6
    int3
""", cpls=(0, 3), topic=T, eflags=IF)

# An exception through a trap gate leaves IF set; through an interrupt gate clears it.
CASES += variants("gate-gp-trap-gate", """
    mov $0x1000, %ax
    mov %ax, %ds
    int $13
    mov $1, %eax
""", cpls=(0, 3), topic=T, eflags=IF,
    pokes=(idt_gate(13, 0xEF, noerr=False),))

# INT n to a vector whose exception pushes an error code pushes none.
CASES += variants("gate-int-n-no-error-code", """
    int $8
    int $10
    int $11
    int $12
    int $13
    int $14
    int $17
    mov $1, %eax
""", cpls=(0, 3), topic=T, eflags=IF,
    pokes=tuple(idt_gate(v, 0xEE, noerr=True) for v in (8, 10, 11, 12, 13, 14, 17)))

# The IDT limit: the whole 8-byte gate must be inside it.
for limit in (0x8 * 0x40 + 6, 0x8 * 0x40 + 7):
    CASES += variants(f"gate-idt-limit-{limit:#x}", """
    int $0x40
    mov $1, %eax
""", cpls=(0,), topic=T, idt_limit=limit, eflags=IF)
CASES += variants("gate-idt-limit-exception", """
    xor %ecx, %ecx
    div %ecx
    mov $1, %eax
""", cpls=(0, 3), topic=T, idt_limit=0x7f,
    pokes=(), eflags=IF)

# A gate whose offset is beyond the target segment's limit: #GP(0).
CASES += variants("gate-offset-beyond-limit", """
    int $0x40
    mov $1, %eax
""", cpls=(0, 3), topic=T, eflags=IF, qemu_differs="QEMU does not check a gate's offset against the code segment limit",
    pokes=(gdt_seg(0xE8, 0, 0x0FFF, 0x9A, 0x4), idt_gate(0x40, 0xEE, sel="SPARE0")))

# 16-bit interrupt and trap gates: a 16-bit frame (IP, CS, FLAGS [, SP, SS]).
# A 16-bit gate saves only IP, so the INT runs in a code segment based at the
# snippet (SPARE1, DPL = CPL) and the handler in another (SPARE0, DPL 0); the
# handler copies the frame to the data page and returns with IRETW.
H16 = """
h16:
    mov (%esp), %eax
    mov %eax, %ds:data+0x10
    mov 4(%esp), %eax
    mov %eax, %ds:data+0x14
    mov 8(%esp), %eax
    mov %eax, %ds:data+0x18
    pushfl
    popl %ds:data+0x1c
    iretw
"""
BODY16 = """
    ljmp $SPARE1|{cpl}, $(1f - 0x400000)
1:  mov %esp, %ebp
    int $0x40
    mov %esp, %ebx
    mov %ebp, %esp
    ljmp ${flat}, $2f
2:  mov $1, %eax
"""
for typ, access in (("int", 0xE6), ("trap", 0xE7)):
    for cpl, flat in ((0, "KCODE"), (3, "UCODE|3")):
        CASES.append(Case(f"gate-16bit-{typ}-cpl{cpl}", BODY16.format(cpl=cpl, flat=flat), cpl=cpl,
                          topic=T, eflags=IF, extra=H16,
                          pokes=(gdt_seg(0xE8, 0x400000, 0xFFFF, 0x9A, 0x4),
                                 gdt_seg(0xF0, 0x400000, 0xFFFF, 0x9A | (cpl << 5), 0x4),
                                 idt_gate(0x40, access, sel="SPARE0", target="h16-0x400000"))))

# The stack switch: the handler's SS:ESP comes from the TSS for its DPL.
CASES += variants("gate-stack-switch-esp0", """
    int $V_INT3
    mov $1, %eax
""", cpls=(1, 2, 3), topic=T, eflags=IF)

# Single-step into a software interrupt through a trap gate: TF is cleared in
# the handler, no #DB for the INT, stepping resumes after IRET.
CASES += variants("gate-tf-through-trap-gate", """
    mov $1, %eax
    int $V_TRAP3
    mov $2, %eax
""", cpls=(0, 3), topic=T, eflags=IF | TF)

if LARGE:
    # Every vector 0x20..0xff is an interrupt gate with DPL 0: INT n from CPL 3 faults.
    vecs = [v for v in range(0x20, 0x100) if v not in (0x7e, 0x7f) and not 0x80 <= v <= 0x8d]
    for i in range(0, len(vecs), 40):
        body = "\n".join(f"    int ${v:#x}" for v in vecs[i:i + 40])
        CASES += variants(f"gate-all-dpl0-vectors-{vecs[i]:#x}", body, cpls=(3,), topic=T)

test_case = case_test(CASES)
