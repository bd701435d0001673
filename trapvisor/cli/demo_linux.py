"""``trapvisor demo-linux`` and ``fetch-linux``: Debian's stock kernel under /dev/kvm (docs/kvm.md).

``demo-linux`` (``make demo-linux``) boots Debian's kernel to an
interactive busybox shell on the emulated 16550.  Where /dev/kvm is not
hardware-assisted (or missing) it boots guest:linux, Debian's i386 kernel,
on the simulated PC instead (docs/linux.md); ``--full`` keeps software KVM,
whose full boot takes many minutes.  ``fetch-linux`` only
fetches the kernel and busybox into build/linux/ and writes the initramfs.
"""

from __future__ import annotations

import sys

from . import options as o

DEMO_CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"
EARLY_LINES = r"NX \(Execute Disable\) protection"


def add_parsers(sub) -> None:
    d = sub.add_parser("demo-linux", help="boot Debian's kernel to a busybox shell under /dev/kvm")
    d.add_argument("--memory", "-m", type=o.memory_size, default="256M", help="guest RAM (default 256M)")
    d.add_argument("--append", default="", help="extra kernel command-line words")
    d.add_argument("--full", action="store_true",
                   help="on software KVM, boot the 64-bit kernel under KVM anyway (many minutes) "
                        "instead of guest:linux on the simulated PC")
    d.add_argument("--trace", type=o.writable_file("trace file"), default=None,
                   help="write an event trace (JSON lines) to FILE")
    d.set_defaults(func=cmd_demo_linux)
    f = sub.add_parser("fetch-linux", help="fetch Debian's kernel and busybox into build/linux/")
    f.set_defaults(func=cmd_fetch_linux)


def cmd_fetch_linux(args) -> int:
    from ..linux.assets import prepare_linux
    assets = prepare_linux()
    print(f"kernel: {assets.kernel} ({assets.kernel_package})")
    print(f"initrd: {assets.initrd}")
    return 0


def demo_on_simulated_pc(args, why: str) -> int:
    """guest:linux on the bare simulated PC, the console on this terminal."""
    from ..guests import LINUX_CMDLINE
    from ..linux.assets import prepare_linux_i386
    from ..machine.pc import PC
    from .console import SerialSpec, open_serial
    from .summaries import report_pc_run
    assets = prepare_linux_i386()
    print(f"trapvisor: {why}: booting Debian's i386 kernel on the simulated PC instead "
          "(minutes to the shell at emulation speed; Ctrl-C ends)", file=sys.stderr)
    serial = open_serial(SerialSpec("stdio"))
    try:
        pc = PC(args.memory, serial_out=serial.out, serial_in=serial.input)
        pc.load_kernel(str(assets.kernel), cmdline=f"{LINUX_CMDLINE} {args.append}".strip(),
                       initrd=str(assets.initrd))
        result = pc.run()
    finally:
        serial.close()
    return report_pc_run(pc, result)


def cmd_demo_linux(args) -> int:
    from ..kvm.hostinfo import probe_kvm
    from ..linux.assets import prepare_linux
    from ..kvm.runner import require_ram_fits, require_usable_kvm
    from .console import SerialSpec
    from .run import run_kvm_on_console
    from .summaries import report_run
    host = probe_kvm()
    if not args.full and (not host.available or not host.hardware_assisted):
        return demo_on_simulated_pc(args, host.label)
    require_usable_kvm(host)
    require_ram_fits(args.memory)
    assets = prepare_linux()
    stop = None
    if not host.hardware_assisted and not args.full:
        stop = EARLY_LINES
        print(f"trapvisor: {host.label}: a full boot to the shell takes many minutes here; "
              "stopping after the first console lines (use --full to go on)", file=sys.stderr)
    res = run_kvm_on_console(SerialSpec("stdio"), args.trace, str(assets.kernel), memory_bytes=args.memory,
                             initrd=str(assets.initrd), cmdline=f"{DEMO_CMDLINE} {args.append}".strip(),
                             stop_after_output=stop)
    return report_run(res)
