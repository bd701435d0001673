"""What the host's /dev/kvm is: usable or not, and hardware-assisted or software.

A KVM that reports every capability can still be a software hypervisor: on
these machines the module is ``kvm_pvm`` and the CPU has no ``vmx``/``svm``
flag, so ordinary guests run through KVM's instruction emulator at about two
million instructions a second (measured; docs/kvm.md, "What KVM is on this
host").  Every figure trapvisor prints for KVM says which kind it was.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from . import ioctls

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12   # linux/kvm.h: "#define KVM_API_VERSION 12", stable since 2.6.22

# Modules that provide /dev/kvm without VT-x/AMD-V, and what they are.
SOFTWARE_KVM_MODULES = {
    "kvm_pvm": "PVM, a software hypervisor for nested clouds",
}


@dataclass
class KvmHostInfo:
    available: bool
    problem: str | None = None        # "absent", "no permission", "missing capability", ...
    hint: str | None = None
    message: str | None = None        # the one line to show when not available
    api_version: int | None = None
    hardware_assisted: bool = False
    kind: str = "unknown"             # "VT-x", "AMD-V", "software (kvm_pvm)", ...
    reason: str = ""
    modules: list[str] = field(default_factory=list)
    capabilities: dict[str, int] = field(default_factory=dict)
    legacy_paging: bool | None = None  # can a 32-bit guest turn on paging? (None: not probed)

    @property
    def label(self) -> str:
        """How KVM figures are labelled in summaries, reports and benchmarks."""
        if not self.available:
            return "KVM unavailable"
        if self.hardware_assisted:
            return f"KVM, hardware-assisted ({self.kind})"
        return f"KVM, {self.kind}: NOT hardware-assisted"


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def loaded_kvm_modules(sys_module: str = "/sys/module") -> list[str]:
    """KVM modules present (via /sys/module: /proc/modules is absent on some kernels)."""
    try:
        names = os.listdir(sys_module)
    except OSError:
        return []
    return sorted(n for n in names if n == "kvm" or n.startswith("kvm_"))


def classify_kvm(flags: set[str], modules: list[str]) -> tuple[bool, str, str]:
    """(hardware_assisted, kind, reason) from the CPU flags and the loaded modules."""
    software = [m for m in modules if m in SOFTWARE_KVM_MODULES]
    if "vmx" in flags and "kvm_intel" in modules:
        return True, "VT-x", "CPU flag vmx present and kvm_intel loaded"
    if "svm" in flags and "kvm_amd" in modules:
        return True, "AMD-V", "CPU flag svm present and kvm_amd loaded"
    if software:
        mod = software[0]
        why = "vmx/svm present but unused" if ({"vmx", "svm"} & flags) else "no vmx or svm CPU flag"
        return False, f"software ({mod})", (
            f"{why}; module {mod} ({SOFTWARE_KVM_MODULES[mod]}) provides /dev/kvm, so ordinary guests "
            "run through KVM's instruction emulator (slow; some instructions and ring 3 fail)")
    if "vmx" in flags:
        return True, "VT-x", "CPU flag vmx present"
    if "svm" in flags:
        return True, "AMD-V", "CPU flag svm present"
    return False, "software (unknown module)", (
        "no vmx or svm CPU flag, yet /dev/kvm exists: a software implementation "
        f"(modules: {', '.join(modules) or 'none listed'})")


def _unavailable(problem: str, message: str, hint: str, **kw) -> KvmHostInfo:
    return KvmHostInfo(available=False, problem=problem, message=message, hint=hint, **kw)


def probe_kvm(device: str = KVM_DEVICE) -> KvmHostInfo:
    """Open /dev/kvm, check the API version and capabilities, and classify it."""
    flags, modules = cpu_flags(), loaded_kvm_modules()
    hw, kind, reason = classify_kvm(flags, modules)
    common = dict(hardware_assisted=hw, kind=kind, reason=reason, modules=modules)
    if not os.path.exists(device):
        return _unavailable("absent", f"{device} does not exist",
                            "load a KVM module (kvm_intel or kvm_amd) or run with --accel sim", **common)
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return _unavailable("no permission", f"no permission to open {device}",
                                "add yourself to the 'kvm' group (then log in again) or run as root", **common)
        return _unavailable("cannot open", f"cannot open {device}: {e.strerror}",
                            "check that the KVM module is loaded; or use --accel sim", **common)
    try:
        version = ioctls.ioctl(fd, ioctls.KVM_GET_API_VERSION)
        caps = {name: ioctls.ioctl(fd, ioctls.KVM_CHECK_EXTENSION, num)
                for name, num in ioctls.CAPABILITIES.items()}
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return _unavailable("wrong API version", f"{device} speaks KVM API {version}, not {KVM_API_VERSION}",
                            "use --accel sim", api_version=version, capabilities=caps, **common)
    missing = [c for c in ioctls.REQUIRED_CAPABILITIES if not caps.get(c)]
    if missing:
        return _unavailable("missing capability",
                            f"{device} lacks capability {', '.join('KVM_CAP_' + m for m in missing)}",
                            "this KVM is too old or too limited for trapvisor; use --accel sim",
                            api_version=version, capabilities=caps, **common)
    return KvmHostInfo(available=True, api_version=version, capabilities=caps,
                       legacy_paging=probe_legacy_paging(device), **common)


def probe_legacy_paging(device: str = KVM_DEVICE) -> bool | None:
    """Does this KVM accept CR0.PG outside long mode (32-bit paging, as paging-timer uses)?

    Measured on kvm_pvm: KVM_SET_SREGS silently drops CR0.PG unless EFER.LME
    is set, and a guest's own MOV to CR0 setting PG raises #GP.  A throwaway
    VM answers the question in a few milliseconds.
    """
    from .guestmem import KvmGuestMemory
    from .vm import KvmSystem, KvmVm
    try:
        system = KvmSystem(device)
    except Exception:
        return None
    mem = vm = None
    try:
        mem = KvmGuestMemory(1 << 20)
        vm = KvmVm(system, mem, irqchip=False)
        vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid(system.supported_cpuid())
        mem.write(0x1000, b"".join((i << 22 | 0x83).to_bytes(4, "little") for i in range(1024)))
        s = vcpu.get_sregs()
        s.cs.db = s.ds.db = 1
        s.cr3, s.cr4, s.cr0 = 0x1000, 0x10, 0x8000_0011     # PSE, PG|ET|PE
        vcpu.set_sregs(s)
        return bool(vcpu.get_sregs().cr0 & 0x8000_0000)
    except OSError:
        return False
    finally:
        if vm is not None:
            vm.close()
        system.close()
        if mem is not None:
            mem.close()


def format_info(info: KvmHostInfo) -> list[str]:
    """The KVM part of ``trapvisor info``."""
    lines = []
    if info.available:
        lines.append(f"KVM: available (/dev/kvm, API version {info.api_version})")
    else:
        lines.append(f"KVM: not usable: {info.message} ({info.problem})")
        if info.hint:
            lines.append(f"  hint: {info.hint}")
    assist = "yes" if info.hardware_assisted else "NO"
    lines.append(f"  hardware-assisted: {assist}; kind: {info.kind}")
    lines.append(f"  why: {info.reason}")
    lines.append(f"  KVM modules loaded: {', '.join(info.modules) or 'none'}")
    if info.capabilities:
        caps = ", ".join(f"{k}={v}" for k, v in info.capabilities.items())
        lines.append(f"  capabilities: {caps}")
    if info.legacy_paging is not None:
        lines.append("  32-bit paging (CR0.PG outside long mode): "
                     + ("supported" if info.legacy_paging else
                        "NOT supported (KVM drops CR0.PG; a guest's MOV to CR0 faults with #GP)"))
    if info.available and not info.hardware_assisted:
        lines.append("  note: guests run through KVM's instruction emulator here: ring-0 guests work "
                     "(slowly); ring 3, SSE3+/AVX/XSAVE and some other instructions fail")
    return lines
