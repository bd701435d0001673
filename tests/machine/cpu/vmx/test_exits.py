"""VM exits (SDM Vol. 3C ch. 25 and 27): each basic exit reason (Appendix C), with
its exit qualification (§27.2.1), interruption information (§27.2.2),
instruction length and information (§27.2.4-27.2.5); the guest state saved
(§27.3, RIP at the exiting instruction: §25.1.2 instruction exits are fault-
like) and the host state loaded (§27.5)."""

import struct

import pytest

from trapvisor.machine.cpu.exits import VmExit
from trapvisor.machine.cpu.vmx import capabilities as C

from .vmxlib import GUEST_CODE, HANDLER, HOST_PD, MSR_BITMAP, IO_A, IO_B, Port, guest_tables, host_cpu, run_guest, setup_vmcs


def exit_of(code: bytes, *, profile="late", regs=None, budget=1000, setup=None, **controls):
    cpu = host_cpu(profile)
    h = setup_vmcs(cpu, code, **controls)
    guest_tables(cpu)
    if setup is not None:
        setup(cpu, h)
    failure = h.launch()
    assert failure is None, failure
    for i, v in (regs or {}).items():
        cpu.regs[i] = v
    ex = cpu.run(budget)
    return cpu, h, ex


def test_cpuid_exits_unconditionally_with_its_length():
    """§25.1.2: CPUID always exits in non-root operation (reason 10)."""
    cpu, h, ex = exit_of(bytes.fromhex("0fa2"))
    assert isinstance(ex, VmExit) and ex.basic == 10 and ex.name == "EXIT_REASON_CPUID"
    assert h.vmread("GUEST_RIP") == GUEST_CODE and h.vmread("VM_EXIT_INSTRUCTION_LEN") == 2


def test_a_vm_exit_loads_the_host_state_and_the_root_controls():
    """§27.5: RIP, RSP, CR0/3/4 from the host-state area, CPL 0, flat segments; the
    root's intercept controls back; RFLAGS 2."""
    cpu, h, ex = exit_of(bytes.fromhex("0fa2"))
    assert not cpu.vmx.nonroot
    assert cpu.eip == h.vmread("HOST_RIP") and cpu.regs[4] == h.vmread("HOST_RSP")
    assert cpu.cr3 == HOST_PD and cpu.cpl == 0 and cpu.get_eflags() == 2
    assert cpu.limit[1] == 0xFFFFFFFF and cpu.tr_limit == 0x67
    assert not cpu.intercepts.cpuid_exiting and not cpu.intercepts.vmx_instruction_exiting


def test_hlt_exits_under_hlt_exiting():
    cpu, h, ex = exit_of(b"\x90\xf4", proc=C.CPU_HLT_EXITING)
    assert ex.basic == 12 and h.vmread("GUEST_RIP") == GUEST_CODE + 1
    assert h.vmread("GUEST_ACTIVITY_STATE") == 0


def test_invlpg_exit_gives_the_linear_address():
    cpu, h, ex = exit_of(bytes.fromhex("0f0138"), proc=C.CPU_INVLPG_EXITING, regs={0: 0x123456})
    assert ex.basic == 14 and h.vmread("EXIT_QUALIFICATION") == 0x123456


def test_rdtsc_exits_under_rdtsc_exiting_and_is_offset_otherwise():
    cpu, h, ex = exit_of(bytes.fromhex("0f31"), proc=C.CPU_RDTSC_EXITING)
    assert ex.basic == 16
    # TSC offsetting (§25.3): RDTSC in the guest returns the TSC plus TSC_OFFSET.
    cpu, h, ex = exit_of(bytes.fromhex("0f31f4"), proc=C.CPU_USE_TSC_OFFSETTING | C.CPU_HLT_EXITING,
                         setup=lambda cpu, h: h.vmwrite("TSC_OFFSET", 1_000_000))
    assert ex.basic == 12 and 1_000_000 <= cpu.regs[0] < 1_000_100


@pytest.mark.parametrize("code,setup,qualification", [
    ("0f22d8", None, 3 | 0 << 4 | 0 << 8),                  # MOV CR3, EAX (CR3-load exiting)
    ("0f20d9", None, 3 | 1 << 4 | 1 << 8),                  # MOV ECX, CR3 (CR3-store exiting)
    ("0f06", "ts", 0 | 2 << 4),                             # CLTS with TS owned, shadow TS=1
    ("0f01f0", "pe", 0 | 3 << 4 | 0x0001 << 16),            # LMSW AX=1: clears the owned MP
])
def test_cr_access_exit_qualification(code, setup, qualification):
    """Table 27-3: CR number, access type, register, LMSW source."""
    def prepare(cpu, h):
        if setup == "ts":
            h.vmwrite("CR0_GUEST_HOST_MASK", 1 << 3)
            h.vmwrite("CR0_READ_SHADOW", 1 << 3)
        elif setup == "pe":
            h.vmwrite("CR0_GUEST_HOST_MASK", 1 << 1)          # MP owned, shadow MP=1
            h.vmwrite("CR0_READ_SHADOW", 1 << 1)
    cpu, h, ex = exit_of(bytes.fromhex(code), profile="early", setup=prepare, regs={0: 1})
    assert ex.basic == 28 and h.vmread("EXIT_QUALIFICATION") == qualification
    assert h.vmread("VM_EXIT_INSTRUCTION_LEN") == len(bytes.fromhex(code))


def test_cr0_reads_return_the_shadow_and_unowned_writes_keep_owned_bits():
    """§25.3: MOV from CR0 returns the read shadow in owned bits; a write that does
    not exit leaves owned bits as they are."""
    def prepare(cpu, h):
        h.vmwrite("CR0_GUEST_HOST_MASK", 1 << 5)          # NE owned; shadow NE=0
        h.vmwrite("CR0_READ_SHADOW", 0)
    # mov eax, cr0; mov ecx, eax; mov cr0, eax (NE=0, as the shadow: no exit); hlt
    code = bytes.fromhex("0f20c089c10f22c0f4")
    cpu, h, ex = exit_of(code, proc=C.CPU_HLT_EXITING, setup=prepare)
    assert ex.basic == 12
    assert not cpu.regs[1] & (1 << 5), "the guest read the shadow's NE"
    assert h.vmread("GUEST_CR0") & (1 << 5), "the real NE stayed set"


def test_mov_dr_exit_qualification():
    cpu, h, ex = exit_of(bytes.fromhex("0f21fa"), proc=C.CPU_MOV_DR_EXITING)   # mov edx, dr7
    assert ex.basic == 29 and h.vmread("EXIT_QUALIFICATION") == 7 | 1 << 4 | 2 << 8


def test_unconditional_io_exiting_and_the_qualification():
    """Table 27-5: size - 1, direction (1 = IN), string, REP, port."""
    cpu, h, ex = exit_of(bytes.fromhex("ec"), proc=C.CPU_UNCONDITIONAL_IO_EXITING, regs={2: 0x3F8})
    assert ex.basic == 30 and h.vmread("EXIT_QUALIFICATION") == 0 | 8 | 0x3F8 << 16
    cpu, h, ex = exit_of(bytes.fromhex("66ef"), proc=C.CPU_UNCONDITIONAL_IO_EXITING, regs={2: 0x80})
    assert h.vmread("EXIT_QUALIFICATION") == 1 | 0x80 << 16


def test_io_bitmaps_select_the_ports_that_exit():
    """§24.6.4: bitmap A covers 0000-7FFF, B 8000-FFFF; a clear bit lets the
    instruction reach the device."""
    def prepare(cpu, h):
        cpu.mem.ram[IO_A + 0x81 // 8] = 1 << (0x81 % 8)
        cpu.mem.ram[IO_B + (0x8004 - 0x8000) // 8] = 1 << 4
        h.vmwrite("IO_BITMAP_A", IO_A)
        h.vmwrite("IO_BITMAP_B", IO_B)
    code = bytes.fromhex("b042e680e681")     # mov al, 42h; out 80h, al; out 81h, al
    cpu, h, ex = exit_of(code, proc=C.CPU_USE_IO_BITMAPS, setup=prepare)
    assert ex.basic == 30 and h.vmread("EXIT_QUALIFICATION") >> 16 == 0x81
    assert h.vmread("GUEST_RIP") == GUEST_CODE + 4


def test_rdmsr_and_wrmsr_exit_without_msr_bitmaps_and_as_the_bitmaps_say():
    """§25.1.3 and §24.6.9."""
    cpu, h, ex = exit_of(bytes.fromhex("0f32"), regs={1: 0x10})
    assert ex.basic == 31
    cpu, h, ex = exit_of(bytes.fromhex("0f30"), regs={1: 0x10})
    assert ex.basic == 32

    def prepare(cpu, h):
        cpu.mem.ram[MSR_BITMAP + 0x174 // 8] |= 1 << (0x174 % 8)      # read-low: SYSENTER_CS
        h.vmwrite("MSR_BITMAP", MSR_BITMAP)
    # rdmsr(TSC, no exit); mov ecx, 174h; rdmsr (exits)
    code = bytes.fromhex("0f32b9740100000f32")
    cpu, h, ex = exit_of(code, proc=C.CPU_USE_MSR_BITMAPS, setup=prepare, regs={1: 0x10})
    assert ex.basic == 31 and h.vmread("GUEST_RIP") == GUEST_CODE + 7
    # An MSR outside both bitmap ranges always exits.
    cpu, h, ex = exit_of(bytes.fromhex("0f32"), proc=C.CPU_USE_MSR_BITMAPS, setup=prepare,
                         regs={1: 0x40000000})
    assert ex.basic == 31


def test_vmcall_and_vmx_instructions_exit_with_their_instruction_information():
    cpu, h, ex = exit_of(bytes.fromhex("0f01c1"))
    assert ex.basic == 18 and h.vmread("VM_EXIT_INSTRUCTION_LEN") == 3
    cpu, h, ex = exit_of(bytes.fromhex("0f78cb"))          # vmread ebx, ecx
    assert ex.basic == 23
    info = h.vmread("VMX_INSTRUCTION_INFO")
    assert info >> 10 & 1 and (info >> 3) & 0xF == 3 and info >> 28 == 1     # Table 27-14
    cpu, h, ex = exit_of(bytes.fromhex("0fc730"))          # vmptrld [eax]
    assert ex.basic == 21
    info = h.vmread("VMX_INSTRUCTION_INFO")
    assert not info >> 10 & 1 and (info >> 15) & 7 == 3 and (info >> 23) & 0xF == 0   # DS:[EAX]


def test_exception_bitmap_exit_gives_the_interruption_information():
    """§25.2 and Table 24-17: vector, type 3 (hardware exception), error-code valid."""
    cpu, h, ex = exit_of(bytes.fromhex("0f0b"), setup=lambda c, h: h.vmwrite("EXCEPTION_BITMAP", 1 << 6))
    assert ex.basic == 0 and ex.name == "EXIT_REASON_EXCEPTION_NMI"
    assert h.vmread("VM_EXIT_INTR_INFO") == 1 << 31 | 3 << 8 | 6
    assert h.vmread("GUEST_RIP") == GUEST_CODE
    # mov ax, 1230h; mov ds, ax: beyond the GDT limit, #GP(1230h)
    cpu, h, ex = exit_of(bytes.fromhex("66b830128ed8"),
                         setup=lambda c, h: h.vmwrite("EXCEPTION_BITMAP", 1 << 13))
    assert h.vmread("VM_EXIT_INTR_INFO") == 1 << 31 | 1 << 11 | 3 << 8 | 13
    assert h.vmread("VM_EXIT_INTR_ERROR_CODE") == 0x1230


def test_an_exception_not_in_the_bitmap_goes_to_the_guest_idt():
    cpu, h, ex = exit_of(bytes.fromhex("0f0b"), proc=C.CPU_HLT_EXITING)
    assert ex.basic == 12 and h.vmread("GUEST_RIP") == HANDLER + 16 * 6


def test_external_interrupt_exit_is_how_the_host_takes_the_cpu_back():
    cpu, h, ex = exit_of(b"\xeb\xfe", pin=C.PIN_EXTERNAL_INTERRUPT_EXITING, budget=50)
    assert not isinstance(ex, VmExit) and cpu.vmx.nonroot, "the budget is not a VM exit"
    ex = h.host_interrupt()
    assert ex.basic == 1 and not cpu.vmx.nonroot
    assert not h.vmread("VM_EXIT_INTR_INFO") >> 31, "not acknowledged on exit: no vector"


def test_interrupt_window_exit_comes_once_the_guest_can_take_an_interrupt():
    """§25.2: exits at a boundary with IF = 1 and no STI blocking -- here, as the bare
    CPU delivers a pending interrupt, at the end of the block after STI's shadow (the
    model's granularity, docs/vtx.md): after STI, NOP, JMP, before the second NOP."""
    code = bytes.fromhex("90fb90eb0090f4")        # nop; sti; nop; jmp $+2; nop; hlt
    cpu, h, ex = exit_of(code, proc=C.CPU_INTERRUPT_WINDOW_EXITING | C.CPU_HLT_EXITING)
    assert ex.basic == 7
    assert h.vmread("GUEST_RFLAGS") & 0x200 and h.vmread("GUEST_RIP") == GUEST_CODE + 5
    assert not h.vmread("GUEST_INTERRUPTIBILITY_INFO") & 1


def test_preemption_timer_exits_after_its_count():
    """§25.5.1: the timer counts down from its VMCS value (rate 2^0 here)."""
    cpu, h, ex = exit_of(b"\xeb\xfe", pin=C.PIN_PREEMPTION_TIMER, budget=10_000,
                         setup=lambda c, h: h.vmwrite("VMX_PREEMPTION_TIMER_VALUE", 100))
    assert ex.basic == 52 and ex.name == "EXIT_REASON_PREEMPTION_TIMER"
    assert 100 <= cpu.icount <= 164


def test_the_early_profile_has_no_preemption_timer():
    from trapvisor.machine.cpu.vmx import VmxFailure
    cpu = host_cpu("early")
    h = setup_vmcs(cpu, b"\xeb\xfe", pin=C.PIN_PREEMPTION_TIMER)
    with pytest.raises(VmxFailure):
        h.launch()


def test_a_triple_fault_in_the_guest_is_a_vm_exit_not_a_machine_stop():
    def prepare(cpu, h):
        h.vmwrite("GUEST_IDTR_LIMIT", 0)        # every delivery faults: #UD, #GP, #DF, shutdown
    cpu, h, ex = exit_of(bytes.fromhex("0f0b"), setup=prepare)
    assert ex.basic == 2 and cpu.stop is None
    assert h.vmread("GUEST_ACTIVITY_STATE") == 2      # shutdown


@pytest.mark.parametrize("code,reason,identity", [
    ("0f0100", 46, 0),          # SGDT [eax]
    ("0f0118", 46, 3),          # LIDT [eax]
    ("0f00d8", 47, 3),          # LTR ax
    ("0f00c0", 47, 0),          # SLDT ax
])
def test_descriptor_table_exiting(code, reason, identity):
    """Secondary control bit 2; reasons 46 and 47 with the instruction identity in
    bits 29:28 of the instruction information (Tables 27-10, 27-11)."""
    cpu, h, ex = exit_of(bytes.fromhex(code), proc2=C.SEC_DESCRIPTOR_TABLE_EXITING,
                         regs={0: 0x20000})
    assert ex.basic == reason and h.vmread("VMX_INSTRUCTION_INFO") >> 28 & 3 == identity


def test_a_task_switch_exits_unconditionally_with_its_source():
    """§25.1.2 and Table 27-2: selector in 15:0, source in 31:30 (2 = JMP); an event
    through a task gate (source 3) is not delivered and is named in the IDT-vectoring
    information (§27.2.4)."""
    def available_tss(cpu, h):        # GDT slot 20h: an available 32-bit TSS
        struct.pack_into("<Q", cpu.mem.ram, 0x20, 0x67 | 0x7900 << 16 | 0x89 << 40)
    cpu, h, ex = exit_of(bytes.fromhex("ea000000002000"), setup=available_tss)   # jmp far 0020h:0
    assert ex.basic == 9 and ex.name == "EXIT_REASON_TASK_SWITCH"
    assert h.vmread("EXIT_QUALIFICATION") == 0x20 | 2 << 30
    assert h.vmread("GUEST_RIP") == GUEST_CODE

    def task_gate_for_ud(cpu, h):
        from .vmxlib import GUEST_IDT
        available_tss(cpu, h)
        struct.pack_into("<Q", cpu.mem.ram, GUEST_IDT + 8 * 6, 0x20 << 16 | 0x8500 << 32)
    cpu, h, ex = exit_of(bytes.fromhex("0f0b"), setup=task_gate_for_ud)
    assert ex.basic == 9 and h.vmread("EXIT_QUALIFICATION") == 0x20 | 3 << 30
    assert h.vmread("IDT_VECTORING_INFO_FIELD") == 1 << 31 | 3 << 8 | 6
    assert cpu.deliveries == 0, "the #UD was not delivered"
