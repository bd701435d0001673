"""Build the bundled guests (test kernels and the tvos guest OS).

Every guest lives in a directory under ``guests/`` with a ``guest.toml``
manifest that names it, describes it and says how to build it.  This module
is the one entry point that ``make``, the tests and the CLI use:

* :func:`list_guests` -- what guests exist;
* :func:`build_guest` -- build one (on first use) and return its ELF;
* :func:`resolve_kernel` -- turn ``guest:NAME`` or a file path into a path;
* ``python -m trapvisor.guests build-all`` -- build everything.

Builds are cached by content: the key hashes every file of the guest (and
of the extra include directories it names), the flags, and the versions of
gcc, as and ld.  The result goes to ``<build dir>/<name>-<key>/`` where the
build dir is ``build/guests`` in the repository unless ``TRAPVISOR_BUILD_DIR``
says otherwise.  A build happens in a scratch directory that is renamed into
place at the end, so concurrent builds (pytest -n) never see half a guest.

Manifest format (TOML)::

    name = "hello"
    kind = "test"                 # "test" or "os"
    description = "one line"
    workloads = []                # for kind = "os": the workload names
    include = ["../lib"]          # extra directories (relative), hashed too
    cflags = ["-O2"]              # appended to the default C flags

    [[image]]                     # built in order; the last one is the guest
    name = "hello"
    sources = ["hello.S"]         # globs relative to the guest directory
    ldscript = "link.ld"
    cflags = []                   # optional, per image

Earlier images are placed in the output directory, which is on the include
path of the assembler, so a later image can ``.incbin "init.elf"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import tomllib

try:  # the CLI reports UserError subclasses as one line
    from trapvisor.errors import UserError as _ErrorBase
except ImportError:  # pragma: no cover - only while errors.py is absent
    _ErrorBase = Exception

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GUESTS_DIR = REPO_ROOT / "guests"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "guests"

# Bump when the build recipe itself changes so old cache entries are ignored.
RECIPE_VERSION = "1"

TOOLS = ("gcc", "as", "ld")

# Flags shared by every guest.  -march=i686 and the no-FPU/SSE flags keep the
# code inside the integer ISA that the simulated CPU implements;
# -fcf-protection=none avoids ENDBR32 (a long NOP older CPUs do not decode).
BASE_CFLAGS = [
    "-m32", "-march=i686", "-ffreestanding", "-fno-pic", "-fno-pie",
    "-fno-stack-protector", "-nostdlib", "-fno-builtin",
    "-fno-asynchronous-unwind-tables", "-fcf-protection=none",
    "-fno-tree-loop-distribute-patterns",   # no memset() calls from loops
    "-mno-sse", "-mno-sse2", "-mno-mmx", "-mno-80387", "-mgeneral-regs-only",
    "-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
]
DEFAULT_OPT = ["-O2"]
BASE_ASFLAGS = ["--32", "--noexecstack"]
BASE_LDFLAGS = ["-m", "elf_i386", "-nostdlib", "--build-id=none",
                "--no-warn-rwx-segments", "-z", "noexecstack"]


class GuestBuildError(_ErrorBase):
    """A guest could not be built (missing tool, bad manifest, compile error).

    The message is one line; ``details`` holds the compiler's full output
    when there is one.
    """

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclasses.dataclass(frozen=True)
class GuestInfo:
    name: str
    description: str
    workloads: list[str]
    kind: str
    directory: pathlib.Path
    default_workload: str | None = None


@dataclasses.dataclass(frozen=True)
class _Image:
    name: str
    sources: list[str]
    ldscript: str
    cflags: list[str]
    format: str = "elf"


# ---------------------------------------------------------------- manifests

def _guests_dir() -> pathlib.Path:
    return GUESTS_DIR


def build_dir() -> pathlib.Path:
    """The cache directory (``TRAPVISOR_BUILD_DIR`` or ``build/guests``)."""
    env = os.environ.get("TRAPVISOR_BUILD_DIR")
    return pathlib.Path(env).resolve() if env else DEFAULT_BUILD_DIR


def _load_manifest(path: pathlib.Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise GuestBuildError(f"bad guest manifest {path}: {e}") from None
    for key in ("name", "description", "image"):
        if key not in data:
            raise GuestBuildError(f"bad guest manifest {path}: missing '{key}'")
    return data


def _manifests() -> dict[str, tuple[pathlib.Path, dict]]:
    found: dict[str, tuple[pathlib.Path, dict]] = {}
    for path in sorted(_guests_dir().rglob("guest.toml")):
        data = _load_manifest(path)
        name = data["name"]
        if name in found:
            raise GuestBuildError(
                f"guest name '{name}' used twice: {found[name][0]} and {path}")
        found[name] = (path, data)
    return found


def _info(path: pathlib.Path, data: dict) -> GuestInfo:
    return GuestInfo(
        name=data["name"],
        description=data["description"],
        workloads=list(data.get("workloads", [])),
        kind=data.get("kind", "test"),
        directory=path.parent,
        default_workload=data.get("default_workload"),
    )


def list_guests() -> list[GuestInfo]:
    """All bundled guests, sorted by name."""
    return [_info(p, d) for _, (p, d) in sorted(_manifests().items())]


def get_guest(name: str) -> GuestInfo:
    """The guest called *name*; a one-line GuestBuildError if there is none."""
    manifests = _manifests()
    if name not in manifests:
        known = ", ".join(sorted(manifests)) or "none"
        raise GuestBuildError(f"no bundled guest named '{name}' (known: {known})")
    return _info(*manifests[name])


def paravirt_variant(kernel) -> pathlib.Path | None:
    """The paravirtual build of the bundled guest that ``kernel`` is a build of
    (its manifest's ``paravirt = "NAME"``), built if needed; None for any other file."""
    path = pathlib.Path(kernel).resolve()
    try:
        path.relative_to(build_dir().resolve())
    except ValueError:
        return None
    name = path.parent.name.rsplit("-", 1)[0]
    manifests = _manifests()
    if name not in manifests or path.stem != name:
        return None
    variant = manifests[name][1].get("paravirt")
    return build_guest(variant) if variant else None


# ---------------------------------------------------------------- tools

_tool_versions: dict[str, str] = {}


def _check_tools() -> None:
    from . import hosttools
    gone = hosttools.missing(TOOLS)
    if gone:
        raise GuestBuildError(f"cannot build guests: {gone[0].problem()}")


def _tool_version(tool: str) -> str:
    if tool not in _tool_versions:
        try:
            out = subprocess.run([tool, "--version"], capture_output=True,
                                 text=True, check=False).stdout
        except OSError as e:
            raise GuestBuildError(f"cannot run '{tool}': {e}") from None
        _tool_versions[tool] = out.splitlines()[0] if out else "unknown"
    return _tool_versions[tool]


# ---------------------------------------------------------------- hashing

def _images(data: dict, manifest: pathlib.Path) -> list[_Image]:
    images = []
    for raw in data["image"]:
        try:
            images.append(_Image(name=raw["name"], sources=list(raw["sources"]),
                                 ldscript=raw["ldscript"],
                                 cflags=list(raw.get("cflags", [])),
                                 format=raw.get("format", "elf")))
        except KeyError as e:
            raise GuestBuildError(
                f"bad guest manifest {manifest}: image lacks {e}") from None
    if not images:
        raise GuestBuildError(f"bad guest manifest {manifest}: no [[image]]")
    for image in images:
        if image.format not in ("elf", "binary"):
            raise GuestBuildError(f"bad guest manifest {manifest}: image "
                                  f"format '{image.format}' is not elf or binary")
    return images


def _hashed_dirs(guest_dir: pathlib.Path, data: dict) -> list[pathlib.Path]:
    dirs = [guest_dir]
    for inc in data.get("include", []):
        d = (guest_dir / inc).resolve()
        if not d.is_dir():
            raise GuestBuildError(
                f"guest '{data['name']}': include directory {d} does not exist")
        dirs.append(d)
    return dirs


def _cache_key(guest_dir: pathlib.Path, data: dict) -> str:
    h = hashlib.sha256()
    h.update(f"recipe {RECIPE_VERSION}\n".encode())
    for tool in TOOLS:
        h.update(f"tool {tool} {_tool_version(tool)}\n".encode())
    h.update(("flags " + " ".join(BASE_CFLAGS + DEFAULT_OPT + BASE_ASFLAGS
                                  + BASE_LDFLAGS) + "\n").encode())
    h.update(repr(sorted(data.items())).encode())
    for d in _hashed_dirs(guest_dir, data):
        for f in sorted(p for p in d.rglob("*") if p.is_file()):
            h.update(f"file {f.relative_to(d)}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- building

def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        first = next((ln for ln in detail.splitlines() if "error" in ln.lower()),
                     detail.splitlines()[0] if detail else "no output")
        raise GuestBuildError(f"{what} failed: {first.strip()}",
                              details=f"command: {' '.join(cmd)}\n{detail}")


def _expand(guest_dir: pathlib.Path, patterns: list[str], guest: str) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for pat in patterns:
        matched = sorted(guest_dir.glob(pat))
        if not matched:
            raise GuestBuildError(f"guest '{guest}': no source matches '{pat}'")
        files.extend(m for m in matched if m not in files)
    return files


def _build_into(out: pathlib.Path, guest_dir: pathlib.Path, data: dict) -> pathlib.Path:
    name = data["name"]
    includes = [f"-I{d}" for d in _hashed_dirs(guest_dir, data)]
    guest_cflags = list(data.get("cflags", []))
    result = None
    for image in _images(data, guest_dir / "guest.toml"):
        objdir = out / f"obj-{image.name}"
        objdir.mkdir()
        cflags = (BASE_CFLAGS + DEFAULT_OPT + guest_cflags + image.cflags
                  + includes + [f"-I{out}", f"-Wa,-I{out}"])
        objects = []
        for src in _expand(guest_dir, image.sources, name):
            obj = objdir / (src.relative_to(guest_dir).as_posix()
                            .replace("/", "_") + ".o")
            if src.suffix in (".c", ".S"):
                cmd = ["gcc", *cflags, "-c", str(src), "-o", str(obj)]
            elif src.suffix == ".s":
                cmd = ["as", *BASE_ASFLAGS, f"-I{out}", str(src), "-o", str(obj)]
            else:
                raise GuestBuildError(f"guest '{name}': unknown source type {src}")
            _run(cmd, f"building guest '{name}': compiling {src.name}")
            objects.append(str(obj))
        script = guest_dir / image.ldscript
        if not script.is_file():
            raise GuestBuildError(f"guest '{name}': linker script {script} missing")
        result = out / f"{image.name}.elf"
        _run(["ld", *BASE_LDFLAGS, "-T", str(script), "-o", str(result), *objects],
             f"building guest '{name}': linking {result.name}")
        if image.format == "binary":
            # A flat image (for the a.out kludge): nothing but the bytes.
            if shutil.which("objcopy") is None:
                raise GuestBuildError("cannot build guests: required tool "
                                      "'objcopy' not found on PATH (install binutils)")
            flat = out / f"{image.name}.bin"
            _run(["objcopy", "-O", "binary", str(result), str(flat)],
                 f"building guest '{name}': objcopy {flat.name}")
            result = flat
    assert result is not None
    final = out / (name + result.suffix)
    if result != final:
        shutil.copyfile(result, final)
    return final


def build_guest(name: str) -> pathlib.Path:
    """Path of guest *name*'s multiboot kernel, building it if not cached.

    That is an ELF file, except for guests whose last image has
    ``format = "binary"`` (the a.out-kludge test kernel): a flat ``.bin``.
    """
    manifests = _manifests()
    if name not in manifests:
        get_guest(name)  # raises the one-line error
    manifest, data = manifests[name]
    _check_tools()
    key = _cache_key(manifest.parent, data)
    target = build_dir() / f"{name}-{key}"
    suffix = ".bin" if _images(data, manifest)[-1].format == "binary" else ".elf"
    final = target / f"{name}{suffix}"
    if final.is_file():
        return final
    build_dir().mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=build_dir()))
    try:
        _build_into(scratch, manifest.parent, data)
        try:
            os.rename(scratch, target)
        except OSError:
            if not final.is_file():  # someone else won the race, else re-raise
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return final


# guest:linux is not built from guests/: it is Debian's i386 kernel with a busybox
# initramfs, fetched with apt-get (linux/assets.py) into build/linux/i386.
LINUX_GUEST = "linux"
LINUX_CMDLINE = "console=ttyS0 earlyprintk=serial"


def linux_guest():
    """The kernel and initramfs of guest:linux (fetched and written on first use)."""
    from .linux.assets import prepare_linux_i386
    return prepare_linux_i386()


def resolve_kernel(spec: str) -> pathlib.Path:
    """``guest:NAME`` -> the built guest; anything else is a kernel file path."""
    if spec.startswith("guest:"):
        name = spec[len("guest:"):]
        if not name:
            raise GuestBuildError("empty guest name in 'guest:' (try guest:tvos)")
        if name == LINUX_GUEST:
            return linux_guest().kernel
        return build_guest(name)
    path = pathlib.Path(spec)
    if not path.is_file():
        raise GuestBuildError(f"kernel file not found: {spec}")
    return path


def build_all() -> list[pathlib.Path]:
    return [build_guest(g.name) for g in list_guests()]


# ---------------------------------------------------------------- CLI

_USAGE = "usage: python -m trapvisor.guests {list | build NAME... | build-all | path NAME}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args == ["list"]:
            for g in list_guests():
                wl = f" [workloads: {', '.join(g.workloads)}]" if g.workloads else ""
                print(f"{g.name:14} {g.kind:5} {g.description}{wl}")
        elif args == ["build-all"]:
            for p in build_all():
                print(p)
        elif len(args) >= 2 and args[0] == "build":
            for n in args[1:]:
                if n == LINUX_GUEST:
                    a = linux_guest()
                    print(a.kernel)
                    print(a.initrd)
                else:
                    print(build_guest(n))
        elif len(args) == 2 and args[0] == "path":
            print(resolve_kernel(args[1] if ":" in args[1] else "guest:" + args[1]))
        else:
            print(_USAGE, file=sys.stderr)
            return 2
    except GuestBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.details:
            print(e.details, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
