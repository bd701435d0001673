"""The ``trapvisor`` command line: :func:`main` and :func:`build_parser`.

Commands, one module each (argument parsing and the command; the work is
done by the layers below):

  run KERNEL              boot a kernel on the simulated PC, under a technique,
                          or on KVM (``run.py``)
  compare KERNEL          natively and under each technique, one table (``compare.py``)
  vms 'KERNEL [ARGS]'...  several VMs time-sliced on one host CPU (``vms.py``)
  vmcs dump KERNEL        simulated VT-x: a guest's VMCS field by field (``vmcs.py``)
  guests, techniques,     the bundled guests, the registered techniques,
  info, doctor            what /dev/kvm is here, the host
                          programs trapvisor needs (``host.py``)
  demo                    the main job on the bundled default guest (``demo.py``)
  demo-linux, fetch-linux Debian's kernel under /dev/kvm (``demo_linux.py``)
  bt show KERNEL --at A   a unit of guest code and its binary translation (``bt.py``)
  kut [TEST...]           kvm-unit-tests on trapvisor and QEMU, one table (``kut.py``)
  theory ...              the Popek-Goldberg theory as executable code
                          (``theory.py``, ``theory_run.py``, ``theory_docs.py``)

Every option is checked before a guest is built or a machine exists
(``options.py``, ``console.py``).  Every user error is one line on stderr,
``trapvisor: error: ...``, and exit status 2; a guest's failure (triple
fault, unimplemented instruction) is reported as what the guest did, with a
register dump (``summaries.py``).
"""

from __future__ import annotations

import sys

from ..errors import UserError
from . import bt, compare, demo, demo_linux, host, kut, run, vmcs, vms
from .options import Parser


def build_parser() -> Parser:
    parser = Parser(prog="trapvisor", description="A hypervisor in Python: the simulated PC, the classic "
                                                  "virtualization techniques, KVM, and the Popek-Goldberg theory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parser(sub)
    compare.add_parser(sub)
    vms.add_parser(sub)
    vmcs.add_parser(sub)
    bt.add_parser(sub)
    host.add_parsers(sub)
    demo.add_parser(sub)
    demo_linux.add_parsers(sub)
    kut.add_parser(sub)
    try:
        from .theory import add_theory_parser
        add_theory_parser(sub)
    except ImportError:
        pass
    return parser


def _error(message: str, hint: str | None = None) -> None:
    # One line, hint included, so scripts and the tests can take stderr's first line as the error.
    print(f"trapvisor: error: {message}" + (f" (hint: {hint})" if hint else ""), file=sys.stderr)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as e:   # --help and --version
        return int(e.code or 0)
    except UserError as e:
        _error(str(e), e.hint)
        return e.exit_status
    except KeyboardInterrupt:
        print("\ntrapvisor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:  # the theory package's own user errors, guest build errors
        if type(e).__name__ in ("TheoryError", "GuestBuildError"):
            _error(str(e))
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
