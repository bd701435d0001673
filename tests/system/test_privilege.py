"""Privilege transitions: IRET to every outer ring (and its checks), the
nulling of data segment registers on a return to an outer ring, far CALL
through call gates with parameter copy and the TSS stack switch, far JMP
through a call gate, far RET to the same and to an outer ring (with the
immediate), direct far transfers to conforming and non-conforming code, and
SYSENTER/SYSEXIT.
"""

from tests.system.common import Case, case_test, variants
from tests.system.harness.runner import IF, gate, gdt_seg

T = "privilege"
NP_SS = "QEMU raises #NP instead of #SS for a not-present stack segment on RET to an outer ring"
CASES: list[Case] = []

CODE = {0: "KCODE", 1: "R1CODE|1", 2: "R2CODE|2", 3: "UCODE|3"}
DATA = {0: "KDATA", 1: "R1DATA|1", 2: "R2DATA|2", 3: "UDATA|3"}


def iret_to(ring: int, *, ss: str | None = None, cs: str | None = None, esp="0x403f00",
            flags="$0x3202") -> str:
    """Snippet text: an IRET frame to ``ring`` (default selectors), then IRET."""
    return f"""
    push ${ss or DATA[ring]}
    push ${esp}
    push {flags}
    push ${cs or CODE[ring]}
    push $1f
    iret
1:  mov %cs, %eax
    mov %ss, %ebx
    mov %esp, %ecx
    pushf
    pop %edx
"""


# IRET from CPL 0 to every ring, with DS/ES/FS/GS holding selectors the new
# CPL may or may not use (a return to an outer ring nulls the ones with
# DPL < new CPL, data or non-conforming code).
SEGS = """
    mov $KDATA, %ax
    mov %ax, %ds
    mov $UDATA|3, %ax
    mov %ax, %es
    mov $CONF0, %ax
    mov %ax, %fs
    mov $R1DATA|1, %ax
    mov %ax, %gs
"""
for ring in (0, 1, 2, 3):
    CASES.append(Case(f"iret-to-ring{ring}", SEGS + iret_to(ring), cpl=0, topic=T))
# From rings 1 and 2 outwards.
for src, dst in ((1, 2), (1, 3), (2, 3)):
    CASES.append(Case(f"iret-ring{src}-to-ring{dst}", """
    mov $R1DATA|1, %ax
    mov %ax, %fs
    mov $UDATA|3, %ax
    mov %ax, %gs
""" + iret_to(dst), cpl=src, topic=T))
# A null selector with a non-zero RPL in FS/GS/DS/ES: zeroed on the way out
# (SDM pseudo-code, Bochs); QEMU keeps a null FS/GS as it is.
CASES.append(Case("iret-null-fs-gs", """
    mov $3, %ax
    mov %ax, %fs
    mov $2, %ax
    mov %ax, %gs
    mov $1, %ax
    mov %ax, %ds
""" + iret_to(3), cpl=0, topic=T,
    qemu_differs="QEMU keeps a null selector with a non-zero RPL in FS/GS on a return to an outer ring"))
CASES.append(Case("iret-null-ds-es", """
    mov $3, %ax
    mov %ax, %es
    mov $2, %ax
    mov %ax, %ds
""" + iret_to(3), cpl=0, topic=T))

# IRET's checks (each faults; the fault handler resumes after the IRET).
for name, kw in [
    ("cs-rpl-below-cpl", dict(cs="KCODE", ss="KDATA")),
    ("cs-null", dict(cs="0")),
    ("cs-data", dict(cs="UDATA|3")),
    ("cs-beyond-gdt", dict(cs="0x103")),
    ("cs-not-present", dict(cs="NPCODE|3")),
    ("cs-dpl-mismatch", dict(cs="R1CODE|3")),
    ("cs-conforming", dict(cs="CONF3|3")),
    ("cs-ldt", dict(cs="LCODE3|3", ss="LDATA3|3")),
    ("ss-null", dict(ss="0")),
    ("ss-rpl", dict(ss="UDATA|2")),
    ("ss-dpl", dict(ss="R2DATA|3")),
    ("ss-readonly", dict(ss="RODATA|3")),
    ("ss-code", dict(ss="UCODE|3")),
    ("ss-not-present", dict(ss="NPDATA|3")),
    ("ss-expand-down", dict(ss="EXPDOWN|3", esp="0x403f00")),
]:
    CASES.append(Case(f"iret-check-{name}", iret_to(3, **kw), cpl=0, topic=T))
# The same from ring 3 (a return to ring 0 is refused) and IRET to the same ring.
CASES += variants("iret-from-ring3-to-ring0", iret_to(0), cpls=(3,), topic=T)
CASES += variants("iret-same-ring", """
    pushf
    push %cs
    push $1f
    iret
1:  mov %esp, %ecx
    pushf
    push %cs
    push $2f
    iretw
2:  mov $1, %eax
""", cpls=(0, 3), topic=T)
# EIP beyond the new CS limit: #GP(0).
CASES.append(Case("iret-eip-beyond-limit", iret_to(3, cs="SPARE0|3").replace("push $1f", "push $0x2000"),
                  cpl=0, topic=T, pokes=(gdt_seg(0xE8, 0x400000, 0x0FFF, 0xFA, 0x4),),
                  qemu_differs="QEMU does not check EIP against the CS limit on IRET"))
# IRET at CPL 0 can set IOPL and IF; at CPL 3 it can change neither (IF only if CPL <= IOPL).
for cpl in (0, 1, 3):
    for iopl in (0, 3):
        CASES.append(Case(f"iret-flags-cpl{cpl}-iopl{iopl}", """
    pushf
    push %cs
    push $1f
    xorl $0x3200, 8(%esp)
    iret
1:  pushf
    pop %ebx
    pushf
    push %cs
    push $2f
    orl $0x3200, 8(%esp)
    iret
2:  pushf
    pop %ecx
""", cpl=cpl, iopl=iopl, eflags=IF, topic=T))

# ---------------------------------------------------------------- call gates
# cgt0 (ring 0) and cgt1 (ring 1) record where they run and what the new
# stack holds, then return with RET far popping the copied parameters.
CGT = """
cgt0:
cgt1:
    mov %cs, %eax
    mov %ss, %ebx
    mov %esp, %ecx
    mov 0(%esp), %edx
    mov %edx, %ds:data+0x20
    mov 4(%esp), %edx
    mov %edx, %ds:data+0x24
    mov 8(%esp), %edx
    mov %edx, %ds:data+0x28
    mov 12(%esp), %edx
    mov %edx, %ds:data+0x2c
    mov 16(%esp), %edx
    mov %edx, %ds:data+0x30
    mov 20(%esp), %edx
    mov %edx, %ds:data+0x34
    mov 24(%esp), %edx
    mov %edx, %ds:data+0x38
    mov %eax, %ds:data+0x3c
    mov $KDATA, %dx
    mov %dx, %es
    lret $PARAMS
"""


def gate_call(gate: str, params: int) -> str:
    pushes = "\n".join(f"    push ${0x11110000 + i:#x}" for i in range(params))
    return f"""
{pushes}
    lcall ${gate}, $0
    mov %es, %esi
    mov %esp, %edi
    mov %cs, %eax
"""


for params in (0, 1, 3):
    extra = CGT.replace("PARAMS", str(4 * params))
    CASES += variants(f"callgate-ring0-params{params}", gate_call("CGATE3", params),
                      cpls=(0, 1, 2, 3), topic=T, extra=extra, cg_params=params)
    CASES += variants(f"callgate-ring1-params{params}", gate_call("CGATE1", params),
                      cpls=(1, 2, 3), topic=T, extra=extra, cg_params=params)
CASES += variants("callgate-ring1-from-ring0", gate_call("CGATE1", 0), cpls=(0,), topic=T,
                  extra=CGT.replace("PARAMS", "0"))
# Gate DPL and RPL checks, not-present gate, JMP through a gate.
CASES += variants("callgate-checks", """
    lcall $CGATE0, $0
    lcall $CGATE3|3, $0
    lcall $CGATENP, $0
    ljmp $CGATE3, $0
    mov $1, %eax
""", cpls=(1, 3), topic=T, extra=CGT.replace("PARAMS", "0"))
CASES += variants("callgate-rpl-above-dpl", """
    lcall $CGATE0|3, $0
    mov $1, %eax
""", cpls=(0,), topic=T, extra=CGT.replace("PARAMS", "0"))
# A call gate to a conforming segment: no privilege change.
CASES += variants("callgate-conforming", gate_call("SPARE0|3", 2), cpls=(0,), topic=T,
                  extra=CGT.replace("PARAMS", "8"),
                  pokes=(gate("gdt+SPARE0", "CONF0", "cgt0", 0xEC, 2),))
CASES += variants("callgate-conforming", gate_call("SPARE0|3", 2), cpls=(3,), topic=T,
                  qemu_differs="QEMU sets CPL to the DPL of a conforming code segment reached through a call gate",
                  extra=CGT.replace("PARAMS", "8"),
                  pokes=(gate("gdt+SPARE0", "CONF0", "cgt0", 0xEC, 2),))
# A 16-bit call gate (parameters are words, IP/CS pushed as words).
CASES += variants("callgate-16bit", """
    ljmp $SPARE1|3, $(1f - 0x400000)
1:  pushw $0x1234
    pushw $0x5678
    lcallw $SPARE2|3, $0
    ljmp $UCODE|3, $2f
2:  mov %esp, %edi
""", cpls=(3,), topic=T, extra="""
cg16:
    mov %ss, %ebx
    mov %esp, %ecx
    mov 0(%esp), %edx
    mov %edx, %ds:data+0x20
    mov 4(%esp), %edx
    mov %edx, %ds:data+0x24
    mov 8(%esp), %edx
    mov %edx, %ds:data+0x28
    lretw $4
""", pokes=(gdt_seg(0xE8, 0x400000, 0xFFFF, 0x9A, 0x4), gdt_seg(0xF0, 0x400000, 0xFFFF, 0xFA, 0x4),
            gate("gdt+SPARE2", "SPARE0", "cg16-0x400000", 0xE4, 2)))

# ---------------------------------------------------------------- far transfers
CASES += variants("far-call-direct", """
    lcall $CONF0, $1f
    jmp 2f
1:  mov %cs, %eax
    lret
2:  lcall $CONF3|3, $3f
    jmp 4f
3:  mov %cs, %ebx
    lret
4:  lcall $KCODE, $3b
    lcall $UCODE|3, $3b
    lcall $XOCODE|3, $3b
    lcall $UDATA|3, $3b
    lcall $0, $3b
    lcall $0x100, $3b
    mov $1, %ecx
""", cpls=(0, 3), topic=T)
CASES += variants("far-jmp-direct", """
    ljmp $CONF0, $1f
1:  mov %cs, %eax
    ljmp $XOCODE|3, $2f
2:  mov %cs, %ebx
    ljmp $UCODE|3, $3f
3:  mov %cs, %ecx
    ljmp $KCODE, $4f
4:  mov %cs, %edx
    ljmp $R1CODE|1, $5f
5:  mov %cs, %esi
""", cpls=(0, 3), topic=T)
CASES += variants("far-jmp-ldt-code", """
    ljmp $LCODE3|3, $1f
1:  mov %cs, %eax
    ljmp $UCODE|3, $2f
2:  mov %cs, %ebx
""", cpls=(3,), topic=T)
CASES += variants("far-jmp-rpl", """
    ljmp $UCODE|0, $1f
1:  mov %cs, %eax
    ljmp $CONF3|0, $2f
2:  mov %cs, %ebx
""", cpls=(0, 3), topic=T)
# Far RET: to the same ring, to an outer ring (with an immediate: parameters
# skipped on both stacks; DS/ES nulled), and refused to an inner ring.
CASES += variants("far-ret-same-ring", """
    push %cs
    push $1f
    lret
1:  push %cs
    push $2f
    lret $0
2:  sub $8, %esp
    push %cs
    push $3f
    lret $8
3:  mov %esp, %eax
""", cpls=(0, 1, 3), topic=T)
for dst in (1, 2, 3):
    CASES.append(Case(f"far-ret-to-ring{dst}", f"""
    mov $KDATA, %ax
    mov %ax, %ds
    mov $R2DATA|2, %ax
    mov %ax, %fs
    push ${DATA[dst]}
    push $0x403f00
    push $0xaaaa0001
    push $0xaaaa0002
    push ${CODE[dst]}
    push $1f
    lret $8
1:  mov %esp, %eax
    mov %ss, %ebx
    mov %cs, %ecx
""", cpl=0, topic=T))
CASES += variants("far-ret-to-inner-ring", """
    push $KCODE
    push $1f
    lret
1:  add $8, %esp
    push $R1CODE|1
    push $2f
    lret
2:  mov $1, %eax
""", cpls=(1, 3), topic=T)
CASES.append(Case("far-ret-outer-bad-ss", """
    push $KDATA
    push $0x403f00
    push $UCODE|3
    push $1f
    lret
1:  push $RODATA|3
    push $0x403f00
    push $UCODE|3
    push $2f
    lret
2:  push $NPDATA|3
    push $0x403f00
    push $UCODE|3
    push $3f
    lret
3:  mov $1, %eax
""", cpl=0, topic=T, qemu_differs=NP_SS))

# ---------------------------------------------------------------- SYSENTER/SYSEXIT
SYSENTER_SETUP = """
    mov $0x174, %ecx
    mov $KCODE, %eax
    xor %edx, %edx
    wrmsr
    mov $0x175, %ecx
    mov $kstack_top, %eax
    wrmsr
    mov $0x176, %ecx
    mov $sysenter_target, %eax
    wrmsr
"""
CASES += variants("sysenter-sysexit", """
    mov $0x403e00, %ecx
    mov $1f, %edx
    sysenter
1:  mov %cs, %eax
    mov %ss, %ebx
    mov %esp, %esi
    pushf
    pop %edi
""", cpls=(0, 3), topic=T, eflags=IF, setup=SYSENTER_SETUP, extra="""
sysenter_target:
    mov %cs, %eax
    mov %eax, %ds:data+0x10
    mov %ss, %eax
    mov %eax, %ds:data+0x14
    mov %esp, %ds:data+0x18
    pushf
    popl %ds:data+0x1c
    sysexit
""")
CASES += variants("sysenter-null-cs", """
    sysenter
    mov $1, %eax
""", cpls=(0, 3), topic=T)
CASES += variants("sysexit-at-cpl3", """
    mov $0x403e00, %ecx
    mov $1f, %edx
    sysexit
1:  mov $1, %eax
""", cpls=(3,), topic=T, setup=SYSENTER_SETUP, extra="sysenter_target:\n    ud2\n")

test_case = case_test(CASES)
