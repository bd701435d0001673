"""Debug exceptions from the debug registers: data breakpoints (write and
read/write, lengths 1, 2 and 4, at every overlap), instruction breakpoints
(a fault, stepped over with RF), general detect (DR7.GD), several at once
and together with single-stepping, at CPL 0 and 3.  (#DB from TF and ICEBP
is in test_exceptions.py.)  The recorder clears DR6 after each #DB and sets
RF in the frame of an instruction breakpoint, as an OS would.
"""

from tests.system.common import Case, case_test, variants
from tests.system.harness.runner import TF

T = "debug"
CASES: list[Case] = []


def dr_setup(*bps: tuple[str, int, int], dr7_extra: int = 0) -> str:
    """Set DR0..DR3 to the given (address, R/W, LEN) and enable them (L bits)."""
    lines, dr7 = [], 0x400 | dr7_extra
    for n, (addr, rw, ln) in enumerate(bps):
        lines += [f"    mov ${addr}, %eax", f"    mov %eax, %db{n}"]
        dr7 |= (1 << (2 * n)) | (rw << (16 + 4 * n)) | (ln << (18 + 4 * n))
    lines += [f"    mov ${dr7:#x}, %eax", "    mov %eax, %db7"]
    return "\n".join(lines) + "\n"


WRITES = """
    movl $1, data+8
    movl $2, data+12
    movb $3, data+10
    mov data+8, %eax
    movw $4, data+6
    movl $5, data+6
    movb $6, data+11
    incl data+8
    mov data+9, %ebx
    push data+8
    pop data+16
    lea data+4, %edi
    mov $3, %ecx
    rep stosl
"""
CASES += variants("dr-data-write-4", WRITES, cpls=(0, 3), topic=T,
                  setup=dr_setup(("data+8", 1, 3)))
CASES += variants("dr-data-rw-4", WRITES, cpls=(0, 3), topic=T,
                  setup=dr_setup(("data+8", 3, 3)))
CASES += variants("dr-data-lengths", WRITES, cpls=(0, 3), topic=T,
                  setup=dr_setup(("data+8", 1, 0), ("data+13", 3, 1), ("data+16", 1, 3),
                                 ("data+5", 3, 0)),
                  qemu_differs="QEMU's DR6 B0-B3 after data breakpoints hit by REP string iterations")
# Two breakpoints hit by one access: Intel CPUs (and Bochs) set both B bits.
CASES += variants("dr-data-two-hits", """
    movl $1, data+8
    movw $2, data+10
    movb $3, data+8
""", cpls=(0, 3), topic=T, setup=dr_setup(("data+8", 1, 3), ("data+10", 1, 1)),
    qemu_differs="QEMU reports only the first of several data breakpoints hit by one access")
CASES += variants("dr-data-with-tf", WRITES, cpls=(0, 3), topic=T, eflags=TF,
                  setup=dr_setup(("data+8", 1, 3)),
                  qemu_differs="QEMU enters the #DB handler for a data breakpoint with TF still "
                               "in effect (a second #DB at the handler) instead of one #DB with BS and Bn")
CASES += variants("dr-global-enable", WRITES, cpls=(0, 3), topic=T,
                  setup=dr_setup(("data+8", 1, 3)).replace("0x40401", "0x40402").replace(
                      "0xd0401", "0xd0402"))
CASES += variants("dr-disabled", WRITES, cpls=(0, 3), topic=T,
                  setup=dr_setup(("data+8", 1, 3)).replace("0xd0401", "0xd0400"))

EXEC = """
    mov $1, %eax
bp1:
    mov $2, %ebx
    mov $3, %ecx
bp2:
    add %eax, %ebx
    mov $4, %edx
"""
CASES += variants("dr-exec", EXEC, cpls=(0, 3), topic=T,
                  setup=dr_setup(("bp1", 0, 0), ("bp2", 0, 0)))
CASES += variants("dr-exec-and-data", EXEC + "    movl $7, data\n", cpls=(0, 3), topic=T,
                  setup=dr_setup(("bp2", 0, 0), ("data", 1, 3)))
CASES += variants("dr-exec-with-tf", EXEC, cpls=(0, 3), topic=T, eflags=TF,
                  setup=dr_setup(("bp2", 0, 0)))

CASES += variants("dr-general-detect", """
    mov %db7, %eax
    mov %db0, %ebx
    mov %eax, %db7
    mov %db6, %ecx
""", cpls=(0,), topic=T, setup=dr_setup(("data", 1, 3), dr7_extra=0x2000),
    qemu_differs="QEMU does not implement general detect (DR7.GD)")

test_case = case_test(CASES)
