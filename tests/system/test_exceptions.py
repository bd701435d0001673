"""Exceptions and their error codes: #DE #DB #BP #OF #BR #UD #NM #TS #NP #SS #GP #AC #DF.

(#PF is in test_paging.py, the privilege-related #GP cases in test_segments.py,
test_privilege.py and test_io.py.)  Each snippet runs at CPL 0 and CPL 3.
"""

from tests.system.common import Case, case_test, variants
from tests.system.harness.runner import (
    AC, CR0_AM, CR0_EM, CR0_MP, CR0_TS, TF, idt_gate, raw,
)

T = "exceptions"
# QEMU's TCG does not check segment limits or null selectors on data and
# stack accesses (docs/system-differential.md).
NO_LIMITS = "QEMU does not check segment limits / null selectors on memory accesses"
CASES: list[Case] = []


def add(name, body, **kw):
    CASES.extend(variants(name, body, topic=T, **kw))


# -- #DE ---------------------------------------------------------------------
add("de-div-zero", """
    xor %edx, %edx
    mov $7, %eax
    xor %ecx, %ecx
    div %ecx
    mov $1, %esi
""")
add("de-quotient-overflow", """
    mov $1, %edx
    xor %eax, %eax
    mov $1, %ecx
    div %ecx
    mov $0x00ff, %ax
    mov $0, %bl
    div %bl
    mov $0x100, %ax
    mov $1, %bl
    div %bl
""")
add("de-idiv-min", """
    mov $0x80000000, %eax
    cdq
    mov $-1, %ecx
    idiv %ecx
    mov $0x8000, %ax
    cwd
    mov $-1, %cx
    idiv %cx
    mov $-128, %ax
    mov $-1, %cl
    idiv %cl
""")
add("de-memory-and-aam", """
    xor %edx, %edx
    mov $9, %eax
    divl data
    divw data
""")

add("de-aam-zero", """
    mov $0x0507, %ax
    .byte 0xd4, 0x00
    mov %eax, %ebx
    .byte 0xd4, 0x0a
    mov %eax, %ecx
    cmp %eax, %eax
""")

# -- #DB -----------------------------------------------------------------------
add("db-icebp", """
    .byte 0xf1
    mov $1, %eax
    .byte 0xf1
""", qemu_differs="QEMU raises #UD for ICEBP (INT1, opcode F1); Intel CPUs raise a #DB trap")
add("db-tf-popf", """
    pushf
    orl $0x100, (%esp)
    popf
    mov $1, %eax
    mov $2, %ebx
    pushf
    andl $~0x100, (%esp)
    popf
    mov $3, %ecx
""")
add("db-tf-at-entry", """
    mov $1, %eax
    add %eax, %eax
    nop
""", eflags=TF)
add("db-tf-int-n", """
    mov $1, %eax
    int $0x80
    mov $2, %eax
    int3
    mov $3, %eax
""", eflags=TF)
add("db-tf-fault", """
    mov $1, %eax
    mov $NPDATA, %bx
    mov %bx, %ds
    mov $2, %eax
""", eflags=TF)
add("db-tf-mov-ss", """
    mov %ss, %ax
    mov %ax, %ss
    mov $1, %ebx
    push %ss
    pop %ss
    mov $2, %ebx
""", eflags=TF, cpls=(0,))
add("db-tf-mov-ss-ring3", """
    mov %ss, %ax
    mov %ax, %ss
    mov $1, %ebx
    push %ss
    pop %ss
    mov $2, %ebx
""", eflags=TF, cpls=(3,))
add("db-tf-popf-clears", """
    pushf
    andl $~0x100, (%esp)
    popf
    nop
""", eflags=TF)

# -- #BP -------------------------------------------------------------------------
add("bp-int3", """
    int3
    mov $1, %eax
    int $3
    mov $2, %eax
""")
add("bp-gate-dpl0", """
    int3
    int $3
    mov $1, %eax
""", pokes=(idt_gate(3, 0x8E),))

# -- #OF -----------------------------------------------------------------------
add("of-into", """
    mov $0x7fffffff, %eax
    add $1, %eax
    into
    mov $1, %ebx
    add $1, %eax
    into
    mov $2, %ebx
""")
add("of-into-gate-dpl0", """
    mov $0x7fffffff, %eax
    add $1, %eax
    into
    int $4
""", pokes=(idt_gate(4, 0x8E),))

# -- #BR -----------------------------------------------------------------------
BOUNDS = """
    .long 10, 20
    .word -5, 5
"""
add("br-bound", """
    mov $15, %eax
    bound %eax, data
    mov $9, %eax
    bound %eax, data
    mov $21, %eax
    bound %eax, data
    mov $20, %eax
    bound %eax, data
    mov $-6, %cx
    bound %cx, data+8
    mov $5, %cx
    bound %cx, data+8
""", data=BOUNDS)

# -- #UD -----------------------------------------------------------------------
add("ud-opcodes", """
    ud2
    .byte 0x0f, 0xff
    .byte 0xf0, 0x90
    .byte 0x8e, 0xc8
    .byte 0x8d, 0xc0
    .byte 0x0f, 0xc7, 0xc8
    .byte 0xf0, 0x01, 0xc0
    mov $1, %eax
""")
add("ud-lock-memory", """
    lock incl data
    lock addl $2, data
    lock xchg %eax, data
    lock btsl $3, data
    mov data, %ecx
""")
add("ud-lock-mov", """
    .byte 0xf0, 0x8b, 0x05
    .long data
    mov $1, %ecx
""", qemu_differs="QEMU executes LOCK MOV instead of raising #UD")

# -- #NM -----------------------------------------------------------------------
add("nm-em", """
    fnop
    mov $1, %eax
    fwait
    mov $2, %eax
""", cr0_set=CR0_EM)
add("nm-ts", """
    fnop
    mov $1, %eax
""", cr0_set=CR0_TS)
add("nm-ts-mp-wait", """
    fwait
    mov $1, %eax
""", cr0_set=CR0_TS | CR0_MP)
add("nm-ts-nomp-wait", """
    fwait
    mov $1, %eax
""", cr0_set=CR0_TS)
add("nm-clts", """
    clts
    smsw %eax
    mov %cr0, %ebx
""", cr0_set=CR0_TS)

# -- #TS: the stack switch to ring 1 (INT through V_RING1, CALL through CGATE1)
# reads SS1:ESP1 from the TSS.  (The #TS itself goes to ring 0, whose stack is
# fine.)
RING1_ENTRY = """
    int $V_RING1
    mov $1, %eax
    lcall $CGATE1, $0
    mov $2, %eax
"""
CGT1 = """
cgt1:
    mov %ss, %ebx
    lret
"""
for label, ss1 in [("null", "0"), ("rpl", "R1DATA|2"), ("dpl", "R2DATA|1"), ("code", "R1CODE|1"),
                   ("rodata", "RODATA|1"), ("beyond-gdt", "0x101"), ("ldt", "LDATA3|0")]:
    CASES += variants(f"ts-ss1-{label}", RING1_ENTRY, cpls=(3,), topic=T, extra=CGT1,
                      pokes=(raw("tss+0x10", ss1, 2),))
CASES += variants("ts-tss-limit", RING1_ENTRY, cpls=(3, 2), topic=T, extra=CGT1, tss_limit=0x0f)
CASES += variants("ts-tss-limit-edge", RING1_ENTRY, cpls=(3,), topic=T, extra=CGT1, tss_limit=0x11)
CASES += variants("ss-ss1-not-present", RING1_ENTRY, cpls=(3,), topic=T, extra=CGT1,
                  qemu_differs="QEMU raises #TS instead of #SS for a not-present inner stack segment",
                  pokes=(raw("gdt+SPARE0", 0x00CF33000000FFFF, 8), raw("tss+0x10", "SPARE0|1", 2)))
CASES += variants("ss-esp1-limit", RING1_ENTRY, cpls=(3,), topic=T, extra=CGT1, qemu_differs=NO_LIMITS,
                  pokes=(raw("gdt+SPARE0", 0x0040B2000000000F, 8), raw("tss+0x10", "SPARE0|1", 2),
                         raw("tss+0xc", 0x8, 4)))
CASES += variants("ts-ring1-ok", RING1_ENTRY, cpls=(3, 2), topic=T, extra=CGT1)

# -- #NP -----------------------------------------------------------------------
add("np-segments", """
    mov $NPDATA|3, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov $LNPDATA|3, %ax
    mov %ax, %ds
    int $V_NP3
    lcall $CGATENP, $0
    int $V_NPCODE
    mov $1, %eax
""")
add("np-far-jmp", """
    ljmp $NPCODE, $0
    lcall $NPCODE, $0
""", cpls=(0,))

# -- #SS -------------------------------------------------------------------------
add("ss-load-not-present", """
    mov $NPDATA|3, %ax
    mov %ax, %ss
    mov $LNPDATA|3, %ax
    mov %ax, %ss
    mov $1, %eax
""", cpls=(3,))
add("ss-limit-push", """
    mov $SMALL|3, %ax
    mov %esp, %ebp
    mov %ax, %ss
    mov $0x104, %esp
    push $1
    push $2
    push $3
    pushw $4
    mov $0x102, %esp
    push $5
    mov $0x100, %esp
    pop %eax
    mov $0xfe, %esp
    pop %ecx
    popw %dx
    mov $0x20, %esi
    mov $0x100, %ecx
    movl $7, %ss:(%ecx)
    movl $7, %ss:-4(%ecx)
    movl %ss:0x20(%ecx), %ebx
""", qemu_differs=NO_LIMITS, cpls=(3,))
add("ss-expand-down-push", """
    mov $EXPDOWN|3, %ax
    mov %esp, %ebp
    mov %ax, %ss
    mov $0x403008, %esp
    push $1
    push $2
    push $3
    mov $0x403002, %esp
    pushw $4
    pushw $5
    mov $0x402ffe, %esp
    pop %eax
    mov (%ebp), %eax
    mov -0x1000(%ebp), %eax
    mov %ss:-0x1000(%ebp), %eax
""", qemu_differs=NO_LIMITS, cpls=(3,))
add("ss-ebp-based", """
    mov $SMALL|3, %ax
    mov %ax, %ds
    mov $0x402200, %ebp
    mov (%ebp), %eax
    mov 0x10(%ebp), %ebx
    mov %ds:(%ebp), %ecx
    mov $0x80, %ebp
    mov %ds:(%ebp), %edx
""", qemu_differs=NO_LIMITS, cpls=(3,))

# -- #GP: assorted ---------------------------------------------------------------------
add("gp-null-segment-access", """
    xor %eax, %eax
    mov %ax, %es
    mov %ax, %fs
    movl $1, %es:data
    mov %fs:data, %ebx
    mov %es:0, %ecx
    mov $3, %ax
    mov %ax, %gs
    mov %gs:data, %edx
    push %es
    pop %ds
    mov data, %esi
""", qemu_differs=NO_LIMITS)
add("gp-privileged-at-cpl3", """
    hlt
    lgdt data
    lidt data
    lldt %ax
    ltr %ax
    mov %cr0, %eax
    mov %eax, %cr3
    mov %db7, %eax
    clts
    lmsw %ax
    invlpg data
    wbinvd
    rdmsr
    wrmsr
    mov $1, %ebx
""", cpls=(3, 1))
add("gp-int-gate-dpl0", """
    int $V_INT0
    int $0x40
    int $13
    int $14
    int $8
    mov $1, %eax
""", cpls=(3, 1))

# -- #AC: alignment checking at CPL 3 with CR0.AM and EFLAGS.AC -------------------------
ALIGN = """
    movl data+1, %eax
    movw data+1, %ax
    movb data+1, %al
    movl data+4, %ebx
    movl $5, data+2
    sub $1, %esp
    pushl $1
    popl %ebx
    add $1, %esp
"""
CASES += variants("ac-cpl3", ALIGN, cpls=(3,), topic=T, cr0_set=CR0_AM, eflags=AC,
                  qemu_differs="QEMU's TCG does not implement alignment checking (#AC)")
CASES += variants("ac-off", ALIGN, cpls=(0, 3), topic=T, cr0_set=CR0_AM)
CASES += variants("ac-no-am", ALIGN, cpls=(3,), topic=T, eflags=AC)

# -- #DF and the triple fault ------------------------------------------------------------
add("df-np-while-gp", """
    mov $0x1000, %ax
    mov %ax, %ds
""", pokes=(idt_gate(13, 0x0E),))
add("df-gp-while-np", """
    mov $NPDATA|3, %ax
    mov %ax, %ds
""", pokes=(idt_gate(11, 0x8E, sel="0"),))
add("df-gp-while-pf", """
    movl 0x410000, %eax
""", paging=True, pokes=(idt_gate(14, 0x8E, sel="NPCODE"),), test_pte={0: 0})
add("benign-then-contributory", """
    int3
    mov $1, %eax
""", pokes=(idt_gate(3, 0x6E),))
add("benign-then-contributory-tf", """
    pushf
    orl $0x100, (%esp)
    popf
    mov $2, %eax
""", pokes=(idt_gate(1, 0x0E),),
    qemu_differs="QEMU clears EXT in the error code of a fault while delivering a single-step #DB")
add("benign-then-contributory-icebp", """
    .byte 0xf1
    mov $1, %eax
""", pokes=(idt_gate(1, 0x0E),), qemu_differs="QEMU raises #UD for ICEBP (INT1)")
add("triple-fault", """
    mov $0x1000, %ax
    mov %ax, %ds
""", pokes=(idt_gate(13, 0x0E), idt_gate(8, 0x0E)))

# -- RF in the EFLAGS image of a fault's frame ----------------------------------------------
add("rf-in-fault-frame", """
    mov $NPDATA|3, %ax
    mov %ax, %ds
    ud2
    xor %ecx, %ecx
    div %ecx
    int3
    int $0x80
""", keep_rf=True, qemu_differs="QEMU does not set RF in the EFLAGS image of a fault's frame")

test_case = case_test(CASES)
