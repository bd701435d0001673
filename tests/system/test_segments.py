"""Segment-register loads with every protection check, and the checks on
memory accesses through the loaded segments (type, limit, expand-down, null).

The load matrix: each of MOV DS/ES/FS/GS/SS (and POP, LDS/LES/LSS) with a
list of selectors covering null selectors, GDT and LDT entries, every
descriptor type, DPL/RPL/CPL combinations, not-present segments and
selectors beyond the table limits, at CPL 0 and 3; after each load the
register's value goes to the data page, so a load that faulted shows the
old value.  QEMU does not check segment limits or null selectors on
memory accesses (docs/system-differential.md): those cases are decided by
Bochs.
"""

from tests.system.common import LARGE, Case, case_test, variants
from tests.system.harness.runner import gdt_seg

T = "segments"
CASES: list[Case] = []
NO_LIMITS = "QEMU does not check segment limits / null selectors / segment types on memory accesses"

SELECTORS = [
    "0", "3", "KDATA", "KDATA|3", "UDATA|3", "UDATA", "UDATA|1", "R1DATA|1", "R1DATA|3",
    "R2DATA|2", "CONF0", "CONF0|3", "CONF3|3", "UCODE|3", "XOCODE|3", "KCODE", "TSSSEL",
    "LDTSEL", "CGATE3", "TASKGATE", "NPDATA|3", "RODATA|3", "EXPDOWN|3", "SMALL|3",
    "KDATARO", "UDATANA|3", "NPCODE", "0x100|3", "0xfff8", "LDATA3|3", "LCODE3|3",
    "LNPDATA|3", "LDATA0", "0x27",
]


def load_matrix(reg: str, how: str = "mov") -> str:
    rec = "%ds" if reg == "es" else "%es"
    lines = []
    for i, sel in enumerate(SELECTORS):
        lines.append(f"    mov ${sel}, %ax")
        if how == "mov":
            lines.append(f"    mov %ax, %{reg}")
        else:  # pop
            lines.append("    push %eax")
            lines.append(f"    pop %{reg}")
        lines.append(f"    mov %{reg}, %bx")
        lines.append(f"    mov %bx, {rec}:data+{2 * i:#x}")
        if how == "pop" and reg == "ss":
            # Back to the flat stack (QEMU does not check the limits of a small one).
            lines.append("    mov %es:data+0x7e, %cx")
            lines.append("    mov %cx, %ss")
    return "\n".join(lines)


# A fault in ring 3 returns through IRET to an outer ring, which zeroes a
# null FS/GS that has a non-zero RPL (selector 3 in the list); QEMU keeps it.
NULL_FS_GS = "QEMU keeps a null selector with a non-zero RPL in FS/GS on a return to an outer ring"
for reg in ("ds", "es", "fs", "gs", "ss"):
    for cpl in ((0, 1, 2, 3) if LARGE else (0, 3)):
        CASES.append(Case(f"load-mov-{reg}-cpl{cpl}", load_matrix(reg), cpl=cpl, topic=T,
                          qemu_differs=NULL_FS_GS if reg in ("fs", "gs") and cpl else None))
SAVE_SS = "    mov %ss, %es:data+0x7e\n"
for reg in ("ds", "ss"):
    CASES += variants(f"load-pop-{reg}", SAVE_SS + load_matrix(reg, "pop"), cpls=(0, 3), topic=T)

# LDS/LES/LFS/LGS/LSS with a far pointer in memory: the offset register is
# written only when the segment load succeeds.
FARPTRS = "\n".join(f"    .long 0x{0x1000 + i:x}\n    .word {sel}" for i, sel in enumerate(
    ["UDATA|3", "KDATA", "NPDATA|3", "RODATA|3", "0", "LDATA3|3", "0x100|3"]))
for op in ("lds", "les", "lfs", "lgs", "lss"):
    rec = "%ds" if op == "les" else "%es"     # the pointer is read, the result stored, through it
    body = "\n".join(f"""    mov $0x5555, %esi
    {op} {rec}:data+{6 * i}, %esi
    mov %esi, {rec}:data+{0x80 + 4 * i:#x}""" for i in range(7))
    if op == "lss":
        body = SAVE_SS + body.replace("mov %esi, %es:", "mov %es:data+0x7e, %cx\n    mov %cx, %ss\n    mov %esi, %es:")
    CASES += variants(f"load-{op}", body, cpls=(0, 3), topic=T, data=FARPTRS)

# The LDT: after LLDT 0, every TI=1 selector faults; a GDT limit cuts the table.
CASES += variants("load-null-ldtr", """
    xor %eax, %eax
    lldt %ax
    mov $LDATA0, %ax
    mov %ax, %ds
    mov $LDATA3|3, %ax
    mov %ax, %es
    sldt %ecx
""", cpls=(0,), topic=T)
CASES += variants("load-gdt-limit", """
    mov $0x78, %ax
    mov %ax, %ds
    mov $0x7b, %ax
    mov %ax, %es
    mov $0x80, %ax
    mov %ax, %fs
    mov $0x83, %ax
    mov %ax, %gs
    mov %ds, %ebx
""", cpls=(0, 3), topic=T, gdt_limit=0x7F)
CASES += variants("load-ldt-limit", """
    mov $LDATA3|3, %ax
    mov %ax, %ds
    mov $LCODE3|3, %ax
    mov %ax, %es
    mov $LNPDATA|3, %ax
    mov %ax, %fs
    mov %fs, %ebx
""", cpls=(0, 3), topic=T, ldt_limit=0xF)

# The accessed bit: set in the descriptor by a data-segment load.
CASES += variants("accessed-bit-data", """
    mov $UDATANA|3, %ax
    mov %ax, %ds
    mov $SPARE0|3, %ax
    mov %ax, %es
""", cpls=(0, 3), topic=T, pokes=(gdt_seg(0xE8, 0, 0xFFFFF, 0xF2, 0xC, accessed=False),))
CASES += variants("accessed-bit-code", """
    ljmp $SPARE0|3, $1f
1:  mov %cs, %eax
""", cpls=(3,), topic=T, pokes=(gdt_seg(0xE8, 0, 0xFFFFF, 0xFA, 0xC, accessed=False),),
    qemu_differs="QEMU does not set the accessed bit of a code segment descriptor loaded into CS")

# Memory accesses through the loaded segments: limits (byte, word, dword at
# the edge), expand-down, read-only, execute-only, code writes, null.
CASES += variants("access-limit-small", """
    mov $SMALL|3, %ax
    mov %ax, %es
    movb $1, %es:0xff
    movw $2, %es:0xfe
    movw $3, %es:0xff
    movl $4, %es:0xfc
    movl $5, %es:0xfd
    movl $6, %es:0x100
    mov %es:0xfc, %eax
    mov %es:0xfe, %bx
    mov %es:0xfe, %ecx
    mov %es:-1, %edx
""", cpls=(0, 3), topic=T, qemu_differs=NO_LIMITS)
CASES += variants("access-expand-down", """
    mov $EXPDOWN|3, %ax
    mov %ax, %es
    movl $1, %es:0x403000
    movl $2, %es:0x402ffe
    movl $3, %es:0x402ffc
    movb $4, %es:0x402fff
    mov %es:0x403004, %eax
    mov %es:0x402ffd, %ebx
""", cpls=(0, 3), topic=T, qemu_differs=NO_LIMITS,
    pokes=())
CASES += variants("access-expand-down-16bit", """
    mov $SPARE0|3, %ax
    mov %ax, %es
    movl $1, %es:0x2000
    movl $2, %es:0xfffc
    movl $3, %es:0xfffe
    movl $4, %es:0x1000
    movl $5, %es:0x10000
""", cpls=(3,), topic=T, qemu_differs=NO_LIMITS,
    pokes=(gdt_seg(0xE8, 0x400000, 0x1fff, 0xF6, 0x0),))
CASES += variants("access-types", """
    mov $RODATA|3, %ax
    mov %ax, %es
    mov %es:data, %eax
    movl $1, %es:data
    incl %es:data
    mov $XOCODE|3, %ax
    mov %ax, %fs
    mov $UCODE|3, %ax
    mov %ax, %gs
    mov %gs:data, %ebx
    movl $2, %gs:data
    mov %cs:data, %ecx
    movl $3, %cs:data+4
""", cpls=(3,), topic=T, qemu_differs=NO_LIMITS)
CASES += variants("access-execute-only-cs", """
    ljmp $XOCODE|3, $1f
1:  mov %cs:data, %eax
    mov $1, %ebx
    ljmp $UCODE|3, $2f
2:  mov %cs:data, %ecx
""", cpls=(3,), topic=T, qemu_differs=NO_LIMITS)
CASES += variants("access-null", """
    xor %eax, %eax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ds:data, %ebx
    movl $1, %es:data
    mov %fs:data, %ecx
    lea data, %esi
    lodsl
    mov %ss:data, %edx
""", cpls=(0, 3), topic=T, qemu_differs=NO_LIMITS)

# A 16-bit stack segment (B=0): PUSH/POP use SP and wrap at 64 KiB.
CASES += variants("stack-16bit", """
    mov $SPARE0|3, %ax
    mov %esp, %ebp
    mov %ax, %ss
    mov $0x12340010, %esp
    push $0x11111111
    pushw $0x2222
    pop %eax
    mov $0x12340000, %esp
    push $0x33333333
    mov %esp, %ebx
    pop %ecx
    mov %esp, %edx
""", cpls=(3,), topic=T,
    pokes=(gdt_seg(0xE8, 0x402000, 0xFFFF, 0xF2, 0x0),))

# ARPL (a segment-protection helper; not available in ring 3 on later CPUs
# but architectural on IA-32).
CASES += variants("arpl", """
    mov $0x10, %ax
    mov $0x3, %bx
    arpl %bx, %ax
    pushf
    pop %ecx
    mov $0x13, %dx
    arpl %bx, %dx
    pushf
    pop %esi
    movw $0x21, data
    arpl %bx, data
    pushf
    pop %edi
""", cpls=(0, 3), topic=T)

test_case = case_test(CASES)
