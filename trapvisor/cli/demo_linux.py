"""``trapvisor demo-linux`` and ``fetch-linux``: Debian's stock kernel under /dev/kvm (docs/kvm.md).

``demo-linux`` (``make demo-linux``) boots Debian's kernel to an
interactive busybox shell on the emulated 16550; on software KVM (no
VT-x/AMD-V) a full boot takes many minutes, so it stops after the kernel's
first console lines unless ``--full`` is given.  ``fetch-linux`` only
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
                   help="on software KVM, boot all the way anyway (many minutes)")
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


def cmd_demo_linux(args) -> int:
    from ..kvm.hostinfo import probe_kvm
    from ..linux.assets import prepare_linux
    from ..kvm.runner import require_ram_fits, require_usable_kvm
    from .console import SerialSpec
    from .run import run_kvm_on_console
    from .summaries import report_run
    host = probe_kvm()
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
