"""Linux boot time under KVM: trapvisor beside ``qemu-system-x86_64 -accel kvm``.

Same kernel (Debian's linux-image-cloud-amd64), same initramfs (trapvisor's,
around busybox-static), same memory and command line, the two VMMs run
alternately.  Measured: wall time from start to the kernel's banner
("Linux version ...") on the serial console where KVM is software, to
/init's first line where it is hardware-assisted.

On software KVM trapvisor adds its documented workarounds (host-side
decompression, command-line words).  QEMU gets the same command line,
workarounds included, twice: with the bzImage (it decompresses in the guest,
as usual) and with the very vmlinux trapvisor decompressed, through QEMU's
PVH entry (the kernel's Xen ELF note 18), which is the like-for-like pair.

Usage: python benchmarks/kvm_linux_boot.py [--rounds R] [--timeout S] [--smp N] [--write-docs]
``--write-docs`` also writes the figures (medians and ratios) into docs/kvm.md's
``figures:linux-boot`` block (``trapvisor/kvm/docs_figures.py``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import select
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from trapvisor.kvm import docs_figures  # noqa: E402
from trapvisor.kvm.boot_linux import effective_cmdline  # noqa: E402
from trapvisor.kvm.hostinfo import probe_kvm  # noqa: E402
from trapvisor.linux.assets import prepare_linux  # noqa: E402
from trapvisor.kvm.runner import run_kvm  # noqa: E402

CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200"
MEMORY_MIB = 256
BANNER = r"Linux version \d"
INIT_LINE = r"/init is running"


def time_trapvisor(assets, target: str, timeout: float, smp: int = 1) -> tuple[float | None, str]:
    t = time.perf_counter()
    res = run_kvm(assets.kernel, memory_bytes=MEMORY_MIB << 20, initrd=str(assets.initrd), cmdline=CMDLINE,
                  serial_out=lambda b: None, stop_after_output=target, max_seconds=timeout, smp=smp)
    dt = time.perf_counter() - t
    if "console output matched" not in res.stop_reason:
        return None, res.stop_reason
    return dt, ""


def host_decompressed_vmlinux(assets) -> pathlib.Path:
    """The same vmlinux trapvisor enters on software KVM, for QEMU's PVH entry (Xen ELF note 18)."""
    from trapvisor.kvm.boot_linux import decompress_payload, parse_setup_header
    out = assets.kernel.parent.parent.parent / f"vmlinux-{assets.kernel.name.removeprefix('vmlinuz-')}"
    if not out.exists():
        data = assets.kernel.read_bytes()
        out.write_bytes(decompress_payload(data, parse_setup_header(data)))
    return out


def time_qemu(assets, target: str, timeout: float, accel: str, cmdline: str,
              kernel: pathlib.Path | None = None, smp: int = 1) -> tuple[float | None, str]:
    cmd = ["qemu-system-x86_64", "-accel", accel, "-m", str(MEMORY_MIB), "-smp", str(smp), "-nodefaults",
           "-display", "none",
           "-monitor", "none", "-serial", "stdio", "-no-reboot",
           "-kernel", str(kernel or assets.kernel), "-initrd", str(assets.initrd), "-append", cmdline]
    t = time.perf_counter()
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return None, "qemu-system-x86_64 not installed (Debian package qemu-system-x86)"
    out, err, pat = b"", b"", re.compile(target.encode())
    try:
        while time.perf_counter() - t < timeout:
            ready, _, _ = select.select([p.stdout, p.stderr], [], [], 0.2)
            for f in ready:
                chunk = os.read(f.fileno(), 65536)
                if f is p.stdout:
                    out += chunk
                else:
                    err += chunk
            if pat.search(out):
                return time.perf_counter() - t, ""
            if p.poll() is not None and not ready:
                why = (err.decode(errors="replace").strip().splitlines() or [f"exit status {p.returncode}"])
                emul = [w for w in why if "emulation failure" in w.lower() or "internal error" in w.lower()]
                return None, (emul or why)[0][:160]
        return None, f"no banner within {timeout:.0f} s"
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--no-tcg", action="store_true", help="skip the QEMU TCG reference figure")
    ap.add_argument("--smp", type=int, default=1, help="vCPUs for every VMM (default 1)")
    ap.add_argument("--write-docs", action="store_true", help="write the figures into docs/kvm.md")
    args = ap.parse_args()
    host = probe_kvm()
    print(f"host: {host.label}" + (f" ({host.reason})" if host.available else f": {host.message}"))
    if not host.available:
        return 1
    assets = prepare_linux()
    target, what = (INIT_LINE, "/init's first line") if host.hardware_assisted else (BANNER, "the kernel banner")
    qemu_cmdline, _ = effective_cmdline(CMDLINE, software_kvm=not host.hardware_assisted)
    print(f"kernel: {assets.kernel.name}; initrd: {assets.initrd.name}; {MEMORY_MIB} MiB; measured: start -> {what}")
    vmlinux = host_decompressed_vmlinux(assets)
    tv, qk, qv, qt, tv_err, qk_err, qv_err, qt_err = [], [], [], [], "", "", "", ""
    for _ in range(args.rounds):
        # Alternate the VMMs so that drifting host load hits them alike.
        dt, tv_err = time_trapvisor(assets, target, args.timeout, args.smp)
        if dt is not None:
            tv.append(dt)
        dt, qv_err = time_qemu(assets, target, args.timeout, "kvm", qemu_cmdline, kernel=vmlinux, smp=args.smp)
        if dt is not None:
            qv.append(dt)
        dt, qk_err = time_qemu(assets, target, args.timeout, "kvm", qemu_cmdline, smp=args.smp)
        if dt is not None:
            qk.append(dt)
        if not args.no_tcg:
            dt, qt_err = time_qemu(assets, target, args.timeout, "tcg", qemu_cmdline, smp=args.smp)
            if dt is not None:
                qt.append(dt)
    kind = "hardware-assisted" if host.hardware_assisted else f"{host.kind}, NOT hardware-assisted"
    fmt = lambda xs: f"{statistics.median(xs):.2f} s (runs: {', '.join(f'{x:.2f}' for x in xs)})"  # noqa: E731
    print(f"trapvisor --accel kvm ({kind}): " + (fmt(tv) if tv else f"FAILED: {tv_err}"))
    print(f"qemu-system-x86_64 -accel kvm, same vmlinux via PVH ({kind}): "
          + (fmt(qv) if qv else f"FAILED: {qv_err}"))
    print(f"qemu-system-x86_64 -accel kvm, bzImage ({kind}): " + (fmt(qk) if qk else f"FAILED: {qk_err}"))
    ratios = {}
    for name, q in (("vmlinux", qv), ("bzImage", qk)):
        ratios[name] = statistics.median(tv) / statistics.median(q) if tv and q else None
        print(f"ratio trapvisor/QEMU-kvm-{name}: "
              + (f"{ratios[name]:.2f}" if ratios[name] is not None else "n/a (one of them did not reach the target)"))
    if not args.no_tcg:
        print("qemu-system-x86_64 -accel tcg (no KVM, for scale): " + (fmt(qt) if qt else f"FAILED: {qt_err}"))
    if args.write_docs:
        med = lambda xs, err: f"{statistics.median(xs):.1f} s" if xs else f"no {what} ({err})"  # noqa: E731
        ratio = lambda r: f"{r:.2f}" if r is not None else "n/a"  # noqa: E731
        docs_figures.write_block("linux-boot", [
            f"Measured by `{docs_figures.COMMANDS['linux-boot']}` on {time.strftime('%Y-%m-%d')}: {kind} "
            f"({host.reason.split(':')[0]}), {os.cpu_count()} host CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"{assets.kernel.name}, {MEMORY_MIB} MiB, {args.smp} vCPU(s), start to {what}, "
            f"median of {args.rounds} round(s).",
            "",
            "| what | time | trapvisor / this |",
            "|---|---|---|",
            f"| trapvisor `--accel kvm` | {med(tv, tv_err)} | |",
            f"| `qemu-system-x86_64 -accel kvm`, the same vmlinux via PVH | {med(qv, qv_err)} | {ratio(ratios['vmlinux'])} |",
            f"| `qemu-system-x86_64 -accel kvm`, the bzImage | {med(qk, qk_err)} | {ratio(ratios['bzImage'])} |",
            f"| `qemu-system-x86_64 -accel tcg` (no KVM), for scale | "
            + (med(qt, qt_err) if not args.no_tcg else "not run") + " | |",
        ])
        print(f"wrote the figures into {docs_figures.DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
