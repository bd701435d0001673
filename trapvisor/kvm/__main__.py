"""``python -m trapvisor.kvm``: the KVM side's own small commands.

  info          what /dev/kvm is here (as ``trapvisor info``)
  fetch-linux   fetch Debian's kernel and busybox into build/linux/, write the initramfs
  demo-linux    boot Debian's kernel to an interactive busybox shell on the emulated 16550
                (``make demo-linux``); on software KVM it stops after the first console lines
                unless --full is given
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError

DEMO_CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"
EARLY_LINES = r"NX \(Execute Disable\) protection"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trapvisor.kvm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info")
    sub.add_parser("fetch-linux")
    d = sub.add_parser("demo-linux")
    d.add_argument("--memory", default="256M")
    d.add_argument("--append", default="", help="extra kernel command-line words")
    d.add_argument("--full", action="store_true",
                   help="on software KVM, boot all the way anyway (many minutes)")
    d.add_argument("--trace", default=None)
    args = p.parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as e:
        print(f"trapvisor: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"trapvisor: hint: {e.hint}", file=sys.stderr)
        return e.exit_status


def _dispatch(args) -> int:
    from .hostinfo import format_info, probe_kvm
    if args.cmd == "info":
        print("\n".join(format_info(probe_kvm())))
        return 0
    from .linux_assets import prepare_linux
    assets = prepare_linux()
    if args.cmd == "fetch-linux":
        print(f"kernel: {assets.kernel} ({assets.kernel_package})")
        print(f"initrd: {assets.initrd}")
        return 0
    from ..cli import parse_size
    from .runner import print_result, require_usable_kvm, run_kvm
    host = probe_kvm()
    require_usable_kvm(host)
    stop = None
    if not host.hardware_assisted and not args.full:
        stop = EARLY_LINES
        print(f"trapvisor: {host.label}: a full boot to the shell takes many minutes here; "
              "stopping after the first console lines (use --full to go on)", file=sys.stderr)
    res = run_kvm(assets.kernel, memory_bytes=parse_size(args.memory), initrd=str(assets.initrd),
                  cmdline=f"{DEMO_CMDLINE} {args.append}".strip(), serial_spec="stdio",
                  stop_after_output=stop, trace_file=args.trace)
    print_result(res)
    return res.exit_status


if __name__ == "__main__":
    raise SystemExit(main())
