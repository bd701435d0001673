"""Task switches: far JMP/CALL to a TSS and through a task gate, INT n and an
exception through a task gate in the IDT (with the error code pushed on
the new task's stack), IRET with NT=1 back through the link field, and the
checks (busy, not present, limit, DPL, a bad link, invalid segments and LDT
in the new TSS, which fault in the new task).

Task 2 runs at CPL 0 in TSS2 (TSS2SEL, and TASKGATE / V_TASK point to it),
set up by TASK2_SETUP; its code records where it runs (CS, TR, EFLAGS with
NT, the link field, CR0.TS) in the data page through SS and returns.
"""

from tests.system.common import Case, case_test, variants
from tests.system.harness.runner import gate, gdt_seg, raw

T = "tasks"
CASES: list[Case] = []

TASK2_SETUP = """
    movl $task2, tss2+0x20
    movl $0x2, tss2+0x24
    movl $0x402f00, tss2+0x38
    movl $pd, tss2+0x1c
    movw $KDATA, tss2+0x48
    movw $KCODE, tss2+0x4c
    movw $KDATA, tss2+0x50
    movw $KDATA, tss2+0x54
    movw $KDATA, tss2+0x58
    movw $KDATA, tss2+0x5c
    movw $LDTSEL, tss2+0x60
"""


def task2(ret: str) -> str:
    return f"""
task2:
    mov %cs, %eax
    mov %eax, %ss:data+0x100
    str %eax
    mov %eax, %ss:data+0x104
    pushf
    popl %ss:data+0x108
    mov %ss:tss2, %eax
    mov %eax, %ss:data+0x10c
    mov %cr0, %eax
    mov %eax, %ss:data+0x110
    mov %ds, %eax
    mov %eax, %ss:data+0x114
    incl %ss:data+0x118
    {ret}
    jmp task2
"""


IRET2 = task2("iret")
JMP2 = task2("ljmp $TSSSEL, $0")

CASES += variants("task-jmp", """
    mov $0x11, %eax
    ljmp $TSS2SEL, $0
    mov $1, %ebx
    ljmp $TSS2SEL, $0
    mov $2, %ecx
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=JMP2)
CASES += variants("task-call", """
    mov $0x22, %eax
    lcall $TSS2SEL, $0
    mov $1, %ebx
    lcall $TSS2SEL, $0
    pushf
    pop %ecx
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=IRET2)
CASES += variants("task-call-gate", """
    lcall $TASKGATE, $0
    mov %cs, %ebx
    ljmp $TASKGATE, $0
    mov %ss, %ecx
""", cpls=(0, 3), topic=T, setup=TASK2_SETUP, extra=task2("iret") + """
    ud2
""")
CASES += variants("task-int-gate", """
    mov $0x33, %eax
    int $V_TASK
    mov %cs, %ebx
    int $V_TASK
    mov %esp, %ecx
""", cpls=(0, 1, 3), topic=T, setup=TASK2_SETUP, extra=IRET2)
CASES += variants("task-int-gate-paging", """
    int $V_TASK
    mov %cr3, %ebx
""", cpls=(0, 3), topic=T, setup=TASK2_SETUP, extra=IRET2, paging=True)
# An exception through a task gate: the error code is on the new task's stack;
# task 2 skips the 2-byte faulting MOV in the old task's saved EIP.
CASES += variants("task-exception-gate", """
    mov $0x1000, %ax
    mov %ax, %ds
    mov $1, %ebx
    mov $NPDATA|3, %ax
    mov %ax, %es
""", cpls=(0, 3), topic=T, setup=TASK2_SETUP, pokes=(gate("idt+8*13", "TSS2SEL", 0, 0x85),),
    extra="""
task2:
    popl %ss:data+0x120
    mov %esp, %ss:data+0x124
    addl $2, %ss:tss+0x20
    incl %ss:data+0x128
    iret
    jmp task2
""")
# The checks.
CASES += variants("task-busy", """
    ljmp $TSSSEL, $0
    lcall $TSSSEL, $0
    lcall $TSS2SEL, $0
    lcall $TSS2SEL, $0
    mov $1, %eax
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=task2("""lcall $TSS2SEL, $0
    iret"""))
CASES += variants("task-dpl", """
    ljmp $TSS2SEL, $0
    lcall $TSS2SEL|3, $0
    lcall $SPARE0, $0
    int $V_TASK
    mov $1, %eax
""", cpls=(1, 3), topic=T, setup=TASK2_SETUP, extra=IRET2,
    pokes=(gate("gdt+SPARE0", "TSS2SEL", 0, 0x85),))
CASES += variants("task-not-present", """
    lcall $SPARE0, $0
    lcall $SPARE1, $0
    int $0x40
    mov $1, %eax
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=IRET2,
    pokes=(gate("gdt+SPARE0", "TSS2SEL", 0, 0x05), gdt_seg(0xF0, "tss2", 0x67, 0x09, 0),
           gate("idt+8*0x40", "SPARE1", 0, 0x85)))
CASES += variants("task-gate-to-bad-tss", """
    lcall $SPARE0, $0
    lcall $SPARE1, $0
    lcall $SPARE2, $0
    mov $1, %eax
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=IRET2,
    pokes=(gate("gdt+SPARE0", "TSSSEL", 0, 0x85), gate("gdt+SPARE1", "LDTSEL", 0, 0x85),
           gate("gdt+SPARE2", "TSS2SEL|4", 0, 0x85)),
    qemu_differs="QEMU raises #TS instead of #GP for a task gate naming a TSS selector with TI=1")
CASES += variants("task-tss-limit", """
    lcall $TSS2SEL, $0
    ljmp $TSS2SEL, $0
    mov $1, %eax
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=IRET2,
    pokes=(gdt_seg(0xA8, "tss2", 0x66, 0x89, 0),))
# IRET with NT=1 and a link that is not a busy TSS: #TS(link).
for name, link in (("null", "0"), ("available", "TSS2SEL"), ("ldt", "LDTSEL"), ("beyond", "0x100")):
    CASES += variants(f"task-iret-bad-link-{name}", """
    pushf
    orl $0x4000, (%esp)
    popf
    iret
    pushf
    pop %ebx
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=IRET2, pokes=(raw("tss", link, 2, phase=1),))
# Faults after the commit point are taken in the new task.  With a bad LDT,
# the new task's stack segment is not loaded yet: delivering the #TS faults
# again, and the machine triple-faults (Bochs and trapvisor).
NEW_STATE = "QEMU delivers a fault after the commit point of a task switch with the old task's EIP"
NEW_STATE_LDT = ("QEMU delivers a #TS for a bad LDT after the commit point of a task switch on a "
                 "stack segment that is not loaded yet (no checks); Bochs triple-faults")
for name, off, value in (("ds-not-present", 0x54, "NPDATA|3"), ("es-code", 0x48, "XOCODE|3"),
                         ("fs-beyond-gdt", 0x58, "0x100"), ("gs-rpl", 0x5c, "KDATA|3"),
                         ("ldt-not-ldt", 0x60, "TSSSEL"), ("ldt-in-ldt", 0x60, "LDATA0|0")):
    CASES += variants(f"task-new-state-{name}", """
    lcall $TSS2SEL, $0
    mov %ds, %ebx
""", cpls=(0,), topic=T, setup=TASK2_SETUP + f"    movw ${value}, tss2+{off:#x}\n", extra=IRET2,
        qemu_differs=NEW_STATE_LDT if name.startswith("ldt") else NEW_STATE)
# The EFLAGS a task switch saves include the arithmetic flags of the last
# instruction (here the INC before task 2's IRET).
CASES += variants("task-saved-eflags", """
    int $V_TASK
    int $V_TASK
    int $V_TASK
    int $V_TASK
""", cpls=(0,), topic=T, setup=TASK2_SETUP, extra=IRET2,
    qemu_differs="QEMU saves stale arithmetic flags in the old TSS on a task switch by IRET")

# The T bit of the new TSS: a #DB trap before the new task's first instruction.
CASES += variants("task-trap-bit", """
    lcall $TSS2SEL, $0
    mov $1, %eax
""", cpls=(0,), topic=T, setup=TASK2_SETUP + "    movw $1, tss2+0x64\n", extra=IRET2,
    qemu_differs="QEMU ignores the T (debug trap) bit of a TSS")

test_case = case_test(CASES)
