"""What /dev/kvm is: classification, problems, and the `info` lines."""
import errno

from trapvisor.kvm import hostinfo
from trapvisor.kvm.hostinfo import KvmHostInfo, classify_kvm, format_info, probe_kvm


def test_software_kvm_is_never_called_hardware_assisted():
    hw, kind, reason = classify_kvm({"sse2", "hypervisor"}, ["kvm", "kvm_pvm"])
    assert not hw
    assert kind == "software (kvm_pvm)"
    assert "no vmx or svm" in reason and "kvm_pvm" in reason


def test_vtx_and_amdv():
    assert classify_kvm({"vmx"}, ["kvm", "kvm_intel"])[:2] == (True, "VT-x")
    assert classify_kvm({"svm"}, ["kvm", "kvm_amd"])[:2] == (True, "AMD-V")


def test_pvm_wins_even_when_flags_present():
    hw, kind, reason = classify_kvm({"svm"}, ["kvm", "kvm_pvm"])
    assert not hw and "unused" in reason


def test_absent_device(tmp_path):
    info = probe_kvm(str(tmp_path / "kvm"))
    assert not info.available and info.problem == "absent"
    assert "does not exist" in info.message and info.hint


def test_no_permission(monkeypatch, tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")

    def refuse(path, flags, *a):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(hostinfo.os, "open", refuse)
    info = probe_kvm(str(dev))
    assert info.problem == "no permission" and "kvm" in info.hint


def test_format_info_says_which_kind():
    info = KvmHostInfo(available=True, api_version=12, hardware_assisted=False, kind="software (kvm_pvm)",
                       reason="no vmx or svm CPU flag", capabilities={"IRQCHIP": 1})
    text = "\n".join(format_info(info))
    assert "hardware-assisted: NO" in text and "software (kvm_pvm)" in text
    assert "NOT hardware-assisted" in info.label


def test_this_host(kvm_host):
    # On these machines: software KVM, never labelled hardware-assisted.
    if "kvm_pvm" in kvm_host.modules:
        assert not kvm_host.hardware_assisted
        assert kvm_host.capabilities["IRQCHIP"] and kvm_host.capabilities["PIT2"]
