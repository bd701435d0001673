"""The ioctl numbers and structure layouts against values from the uapi headers."""
import ctypes

from trapvisor.kvm import ioctls as k


def test_structure_sizes_match_the_headers():
    assert ctypes.sizeof(k.kvm_regs) == 144
    assert ctypes.sizeof(k.kvm_segment) == 24
    assert ctypes.sizeof(k.kvm_dtable) == 16
    assert ctypes.sizeof(k.kvm_sregs) == 312
    assert ctypes.sizeof(k.kvm_fpu) == 416
    assert k.kvm_fpu.mxcsr.offset == 408
    assert ctypes.sizeof(k.kvm_cpuid_entry2) == 40
    assert ctypes.sizeof(k.kvm_userspace_memory_region) == 32
    assert ctypes.sizeof(k.kvm_pit_config) == 64
    assert ctypes.sizeof(k.kvm_irq_routing_entry) == 48
    assert ctypes.sizeof(k.kvm_translation) == 24


def test_ioctl_numbers():
    expected = {
        "KVM_GET_API_VERSION": 0xAE00, "KVM_CREATE_VM": 0xAE01, "KVM_CHECK_EXTENSION": 0xAE03,
        "KVM_GET_VCPU_MMAP_SIZE": 0xAE04, "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
        "KVM_CREATE_VCPU": 0xAE41, "KVM_SET_USER_MEMORY_REGION": 0x4020AE46,
        "KVM_SET_TSS_ADDR": 0xAE47, "KVM_SET_IDENTITY_MAP_ADDR": 0x4008AE48,
        "KVM_CREATE_IRQCHIP": 0xAE60, "KVM_IRQ_LINE": 0x4008AE61, "KVM_SET_GSI_ROUTING": 0x4008AE6A,
        "KVM_CREATE_PIT2": 0x4040AE77, "KVM_RUN": 0xAE80, "KVM_GET_REGS": 0x8090AE81,
        "KVM_SET_REGS": 0x4090AE82, "KVM_GET_SREGS": 0x8138AE83, "KVM_SET_SREGS": 0x4138AE84,
        "KVM_TRANSLATE": 0xC018AE85, "KVM_INTERRUPT": 0x4004AE86, "KVM_GET_MSRS": 0xC008AE88,
        "KVM_SET_MSRS": 0x4008AE89, "KVM_GET_FPU": 0x81A0AE8C, "KVM_SET_FPU": 0x41A0AE8D,
        "KVM_SET_CPUID2": 0x4008AE90, "KVM_GET_MP_STATE": 0x8004AE98,
    }
    for name, value in expected.items():
        assert getattr(k, name) == value, name
        assert k.ioctl_name(value) == name


def test_exit_reason_names():
    assert k.EXIT_REASON_NAMES[2] == "KVM_EXIT_IO"
    assert k.EXIT_REASON_NAMES[17] == "KVM_EXIT_INTERNAL_ERROR"
    assert k.EXIT_REASON_NAMES[9] == "KVM_EXIT_FAIL_ENTRY"


def test_variable_length_buffers():
    buf = k.cpuid2_buffer(3)
    assert ctypes.sizeof(buf) == 8 + 3 * 40
    msrs = k.msrs_buffer([(0x10, 5), (0x1A0, 1)])
    assert msrs.nmsrs == 2 and msrs.entries[1].index == 0x1A0 and msrs.entries[1].data == 1
    routing = k.irq_routing_buffer([(0, k.KVM_IRQCHIP_IOAPIC, 2)])
    assert routing.nr == 1 and routing.entries[0].irqchip.pin == 2
    assert routing.entries[0].type == k.KVM_IRQ_ROUTING_IRQCHIP
