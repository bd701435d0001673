"""Paging: #PF error codes (P, W/R, U/S, RSVD) for every combination of PTE
and PDE flags, access kind, CPL and CR0.WP; accessed and dirty bits as left
in the page tables; CR2; INVLPG; CR3 reloads and global pages; 4 MiB PSE
pages; instruction fetches from and across unmapped pages; turning paging
off and on.

The test pages are at TEST_ADDR (0x410000) + i * 0x1000, their PTEs at
pt1 + 4 * (0x10 + i); PDE 2 (0x800000) is either a 4 MiB page or the page
table pt2 (see kernel.c).  The dump shows every PTE of the snippet's region.
"""

from tests.system.common import LARGE, Case, case_test, variants
from tests.system.harness.runner import (
    A, CR0_WP, CR4_PGE, CR4_PSE, D, G, P, PS, RW, US, raw,
)

T = "paging"
CASES: list[Case] = []

# Pages 0..4: not present, user read-only, user read-write, supervisor
# read-only, supervisor read-write; page 5: read-write with A and D preset.
PTES = {0: 0, 1: P | US, 2: P | RW | US, 3: P, 4: P | RW, 5: P | RW | US | A | D}
ACCESS = "\n".join(f"""    mov {0x410000 + 0x1000 * i:#x}, %eax
    movl ${i + 1}, {0x410000 + 0x1000 * i + 4:#x}
    incb {0x410000 + 0x1000 * i + 8:#x}""" for i in range(6))
for wp in (0, 1):
    CASES += variants(f"pf-pte-matrix-wp{wp}", ACCESS, cpls=(0, 1, 2, 3) if LARGE else (0, 3),
                      topic=T, paging=True, test_pte=PTES, cr0_set=CR0_WP if wp else 0)

# The same combinations at the PDE level (PDE 2 -> pt2, whose PTEs are all P|RW|US).
PDE_ACCESS = """
    mov 0x800000, %eax
    movl $1, 0x800004
    mov 0x801000, %ebx
"""
# (big_pde = 0: no PDE 2 at all, the accesses fault as not present.)
for name, pde in (("absent", 0), ("ro", P | US), ("rw", P | RW | US), ("sup-ro", P),
                  ("sup-rw", P | RW)):
    for wp in (0, 1):
        CASES += variants(f"pf-pde-{name}-wp{wp}", PDE_ACCESS, cpls=(0, 3), topic=T, paging=True,
                          big_pde=pde, cr0_set=CR0_WP if wp else 0)

# PTE and PDE both restrict: the combination is the more restrictive one.
CASES += variants("pf-pde-pte-combined", """
    mov 0x800000, %eax
    movl $1, 0x800004
    mov 0x801000, %ebx
    movl $2, 0x801004
""", cpls=(0, 3), topic=T, paging=True, big_pde=P | RW | US, cr0_set=CR0_WP,
    pokes=(raw("pt2+4*1", 0x801000 | P | US, phase=0),))

# CR2 and the error code of accesses that cross into an unmapped page.
CASES += variants("pf-page-crossing", """
    mov 0x410ffe, %eax
    movl $0x11223344, 0x410ffc
    movl $0x55667788, 0x410ffe
    mov 0x40fffe, %ebx
    movw $0x99aa, 0x411fff
    mov %cr2, %ecx
""", cpls=(0,), topic=T, paging=True, test_pte={1: 0, 0: P | RW | US, 2: P | US})
CASES += variants("pf-page-crossing-user", """
    mov 0x410ffe, %eax
    movl $0x11223344, 0x410ffc
    movl $0x55667788, 0x410ffe
    movw $0x99aa, 0x411fff
""", cpls=(3,), topic=T, paging=True, test_pte={1: 0, 0: P | RW | US, 2: P | US})

# Instruction fetch: from an unmapped page, from a supervisor page at CPL 3,
# and an instruction that crosses into an unmapped page.  The setup puts
# "int $0x7f" at the start of test pages 2 and 3 and a 5-byte MOV across the
# end of page 6.
FETCH_SETUP = """
    movw $0x7fcd, 0x412000
    movw $0x7fcd, 0x413000
    movb $0xb8, 0x416ffe
    movl $0x7fcd0000, 0x416fff
"""
for name, target, ptes in (("absent", "0x410000", {0: 0}), ("user-page", "0x412000", {}),
                           ("supervisor-page", "0x413000", {3: P | RW}),
                           ("crossing", "0x416ffe", {7: 0})):
    CASES += variants(f"pf-fetch-{name}", f"""
    mov ${target}, %eax
    jmp *%eax
""", cpls=(0, 3), topic=T, paging=True, setup=FETCH_SETUP, test_pte=ptes)

# INVLPG and CR3 reloads drop a stale translation; CR0.PG off and on again.
STALE = """
    mov 0x410000, %eax
    movl $0, pt1+4*0x10
    {flush}
    mov 0x410000, %ebx
    movl $0x410007, pt1+4*0x10
    {flush}
    mov 0x410000, %ecx
"""
CASES += variants("tlb-invlpg", STALE.format(flush="invlpg 0x410000"), cpls=(0,), topic=T, paging=True)
CASES += variants("tlb-cr3-reload", STALE.format(flush="mov %cr3, %edx\n    mov %edx, %cr3"),
                  cpls=(0,), topic=T, paging=True)
CASES += variants("tlb-paging-off-on", """
    mov 0x411000, %eax
    mov %cr0, %edx
    and $0x7fffffff, %edx
    mov %edx, %cr0
    mov 0x411000, %ebx
    movl $5, 0x411004
    or $0x80000000, %edx
    mov %edx, %cr0
    mov 0x411004, %ecx
""", cpls=(0,), topic=T, paging=True, test_pte={1: 0})
# Global pages survive a CR3 reload on Intel CPUs and Bochs (SDM Vol. 3A
# §4.10.4.1); QEMU flushes them.  INVLPG and toggling CR4.PGE drop them.
GLOBAL = """
    mov 0x410000, %eax
    movl $0, pt1+4*0x10
    mov %cr3, %edx
    mov %edx, %cr3
    mov 0x410000, %ebx
    invlpg 0x410000
    mov 0x410000, %ecx
    movl $0x410107, pt1+4*0x10
    mov 0x410000, %esi
    movl $0, pt1+4*0x10
    mov %cr4, %edx
    and $~0x80, %edx
    mov %edx, %cr4
    or $0x80, %edx
    mov %edx, %cr4
    mov 0x410000, %edi
"""
CASES += variants("tlb-global-page", GLOBAL, cpls=(0,), topic=T, paging=True, cr4=CR4_PGE,
                  test_pte={0: P | RW | US | G},
                  qemu_differs="QEMU flushes global pages on a CR3 load")
CASES += variants("tlb-global-without-pge", GLOBAL, cpls=(0,), topic=T, paging=True,
                  test_pte={0: P | RW | US | G})

# 4 MiB pages (CR4.PSE): flags, accessed/dirty in the PDE, and a PS PDE without CR4.PSE.
BIG = """
    mov 0x800000, %eax
    movl $1, 0x800004
    mov 0xbffffc, %ebx
    movl $2, 0xa00000
"""
for name, pde in (("rw", P | RW | US), ("ro", P | US), ("sup", P | RW), ("absent", 0)):
    for wp in (0, 1):
        if name == "absent" and wp:
            continue
        CASES += variants(f"pse-{name}-wp{wp}", BIG, cpls=(0, 3), topic=T, paging=True, cr4=CR4_PSE,
                          big_pde=0x800000 | PS | pde if pde else 0x800000 | PS,
                          cr0_set=CR0_WP if wp else 0)
CASES += variants("pse-disabled", BIG, cpls=(0,), topic=T, paging=True,
                  big_pde=0x800000 | PS | P | RW | US)
CASES += variants("pse-global", """
    mov 0x800000, %eax
    movl $0, pd+8
    mov %cr3, %edx
    mov %edx, %cr3
    mov 0x800000, %ebx
    invlpg 0x800000
    mov 0x800000, %ecx
""", cpls=(0,), topic=T, paging=True, cr4=CR4_PSE | CR4_PGE, big_pde=0x800000 | PS | P | RW | US | G,
    qemu_differs="QEMU flushes global pages on a CR3 load")
# Reserved bits 21:13 of a 4 MiB PDE (no PSE-36): #PF with RSVD.
CASES += variants("pse-reserved-bit", BIG, cpls=(0, 3), topic=T, paging=True, cr4=CR4_PSE,
                  big_pde=0x800000 | 0x200000 | PS | P | RW | US,
                  qemu_differs="QEMU clears the P bit in the error code of a reserved-bit #PF")

# Accessed and dirty bits: reads set A, writes set A and D, in PTE and PDE;
# a faulting access sets neither.
CASES += variants("accessed-dirty", """
    mov 0x410000, %eax
    movl $1, 0x411000
    mov 0x412000, %ebx
    movl $2, 0x412000
    movl $3, 0x413000
    mov 0x414000, %ecx
    lea 0x415000, %edi
    mov $0x11, %eax
    mov $8, %ecx
    rep stosl
""", cpls=(0, 3), topic=T, paging=True, test_pte={3: P | US, 4: P | US | RW})

# Writes by the supervisor to read-only pages depend on WP; CPL 3 can never.
CASES += variants("wp-supervisor-writes", """
    movl $1, 0x411000
    movl $2, 0x413000
    mov %cr0, %eax
    xor $0x10000, %eax
    mov %eax, %cr0
    movl $3, 0x411004
    movl $4, 0x413004
""", cpls=(0,), topic=T, paging=True, test_pte={1: P | US, 3: P})

# A snippet at CPL 3 reading kernel memory that the PTE marks supervisor.
CASES += variants("user-reads-supervisor", """
    mov 0x413000, %eax
    mov 0x414000, %ebx
    mov 0x410000, %ecx
    push 0x414000
    pop 0x412000
""", cpls=(3,), topic=T, paging=True, test_pte={3: P, 4: P | RW})

# Descriptor-table reads are supervisor accesses even at CPL 3 (SDM Vol. 3A
# §4.6.1): with the GDT's page made supervisor-only, segment loads at CPL 3
# still work, while an explicit read of the GDT faults with U=1.
CASES += variants("pf-implicit-supervisor-access", """
    mov $UDATA|3, %ax
    mov %ax, %ds
    mov $SPARE0|3, %ax
    mov %ax, %es
    mov gdt, %eax
    sgdt data
    mov $1, %ebx
""", cpls=(3,), topic=T, paging=True, setup="""
    mov $gdt, %eax
    shr $12, %eax
    andl $~4, pt0(,%eax,4)
""", pokes=(raw("gdt+SPARE0", 0x00CFF3000000FFFF, 8),))

test_case = case_test(CASES)
