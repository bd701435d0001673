"""Snapshots: a whole simulated machine, saved to a file and restored into a fresh one.

What is saved is every piece of state reachable from the technique's monitor
object (``vmm/monitor.py``; ``native`` holds the bare PC): the CPU's registers,
descriptor caches, TLBs and counters, every device on the board, the virtual
clock and its armed timers (as "which device's method, when"), the interrupt
controllers, and the monitor's own state for its technique (trap-and-emulate's
shadow page tables, shadow GDT, cached address spaces and statistics).  RAM
is saved sparsely: only pages that are not all zero.

What is *not* saved is wiring, the same in every machine built from the same
options: functions and closures (serial sinks, hooks), objects that are not
trapvisor's (open files, locks) or that say they are wiring (``SNAPSHOT_WIRING``), decoded-instruction caches (rebuilt as the
code runs again) and views of memory saved elsewhere.  So a restore first
builds the machine afresh from the options recorded in the file (kernel,
command line, memory, technique, CPU variant), then lays the saved state over
it (:func:`restore`): what the guest sees continues exactly where it was.

The file: ``MAGIC``, a format version, the SHA-256 of the payload, then the
payload: a zlib-compressed pickle of plain data only (numbers, strings,
bytes, lists, tuples, dicts), read back by an unpickler that refuses any
class, so a file from elsewhere cannot run code.  A file of another version
or a damaged one is refused with one line (:class:`SnapshotError`).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import mmap
import os
import pickle
import struct
import types
import zlib
from collections import Counter, OrderedDict, deque

from ..errors import UserError

MAGIC = b"TRAPVISOR-SNAPSHOT\n"
VERSION = 1
PAGE = 4096
ZERO_PAGE = bytes(PAGE)
# Attributes that are caches or views, rebuilt or shared elsewhere (see the module docstring).
SKIP = frozenset({"cache", "page_blocks", "translator", "code_pages", "_anchor"})
SPARSE_MIN = 1 << 16          # bytearrays from this size on are saved page by page


class SnapshotError(UserError):
    """A snapshot file that cannot be used (one line)."""


def _mine(obj) -> bool:
    return type(obj).__module__.startswith("trapvisor.")


def _attrs(obj):
    names = []
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    out = {}
    for name in names:
        try:
            out[name] = getattr(obj, name)
        except AttributeError:
            pass
    out.update(getattr(obj, "__dict__", {}))
    return out


ZERO_CHUNK = bytes(64 * PAGE)


def _nonzero_pages(buf: bytearray) -> dict:
    """{page number: bytes} of the pages not all zero (whole zero chunks skipped at memcmp speed)."""
    pages = {}
    step = len(ZERO_CHUNK)
    for base in range(0, len(buf), step):
        chunk = buf[base:base + step]          # a bytearray slice: compared by memcmp
        if chunk == ZERO_CHUNK[:len(chunk)]:
            continue
        for i in range(0, len(chunk), PAGE):
            page = chunk[i:i + PAGE]
            if page != ZERO_PAGE[:len(page)]:
                pages[(base + i) // PAGE] = bytes(page)
    return pages


_COLLECTIONS = {deque: "deque", OrderedDict: "OrderedDict", Counter: "Counter"}
_COLLECTION_TYPES = {name: t for t, name in _COLLECTIONS.items()}


def _ordered(items):
    try:
        return sorted(items)       # one order for equal sets (their iteration order is not)
    except TypeError:
        return list(items)


class _Saver:
    def __init__(self):
        self.memo: dict[int, int] = {}
        self.keep = []            # the objects memoized (ids stay valid)

    def save(self, v):
        if v is None or isinstance(v, (bool, int, float, str, bytes)):
            return v
        t = type(v)
        if t is tuple:
            return ("T", [self.save(x) for x in v])
        if t is frozenset:
            return ("F", [self.save(x) for x in _ordered(v)])
        if t in _COLLECTIONS:                   # deque, OrderedDict, Counter: by identity too
            if id(v) in self.memo:
                return ("R", self.memo[id(v)])
            n = self._memo(v)
            items = [(self.save(k), self.save(x)) for k, x in v.items()] if t is not deque \
                else [self.save(x) for x in v]
            return ("Q", n, _COLLECTIONS[t], items, v.maxlen if t is deque else None)
        if t is list or t is dict or t is set:
            # Mutable: saved once, by identity (the CPU's tlb_r is one of its _tlb dicts).
            if id(v) in self.memo:
                return ("R", self.memo[id(v)])
            n = self._memo(v)
            if t is list:
                return ("L", n, [self.save(x) for x in v])
            if t is dict:
                return ("D", n, [(self.save(k), self.save(x)) for k, x in v.items()])
            return ("S", n, [self.save(x) for x in _ordered(v)])
        if t is bytearray or t is mmap.mmap:       # guest RAM is an anonymous mmap
            if id(v) in self.memo:
                return ("R", self.memo[id(v)])
            n = self._memo(v)
            if len(v) < SPARSE_MIN and t is bytearray:
                return ("A", n, bytes(v))
            return ("P", n, len(v), _nonzero_pages(v))
        if t is itertools.count:
            return ("C", int(repr(v)[6:-1]))
        if t is types.MethodType:
            owner = v.__self__
            if _mine(owner):
                return ("M", self.save(owner), v.__func__.__name__)
            return ("W",)
        if isinstance(v, (type, types.FunctionType)):
            q = getattr(v, "__qualname__", "")
            if getattr(v, "__module__", "").startswith("trapvisor.") and "<" not in q:
                return ("K", v.__module__, q)     # a class or module-level function, by name
            return ("W",)
        if _mine(v) and not getattr(v, "SNAPSHOT_WIRING", False):
            if id(v) in self.memo:
                return ("R", self.memo[id(v)])
            n = self._memo(v)
            attrs = {k: ("W",) if k in SKIP else self.save(x) for k, x in _attrs(v).items()}
            return ("O", n, t.__module__, t.__qualname__, attrs)
        return ("W",)             # wiring: functions, closures, files, other libraries' objects

    def _memo(self, v) -> int:
        n = len(self.keep)
        self.memo[id(v)] = n
        self.keep.append(v)
        return n


class _Loader:
    def __init__(self):
        self.memo: dict[int, object] = {}
        self.used: set[int] = set()      # live objects already standing for a saved one

    def _take(self, fresh, cls):
        """The live object to restore into, if it is of the class and not taken already
        (restoring into a running machine must not alias two saved objects to one)."""
        if type(fresh) is cls and id(fresh) not in self.used:
            self.used.add(id(fresh))
            return fresh
        return None

    def build(self, node, fresh):
        if not isinstance(node, tuple):
            return node
        tag = node[0]
        if tag == "W":
            return fresh
        if tag == "R":
            return self.memo[node[1]]
        if tag == "L":
            old = list(fresh) if type(fresh) is list else []
            out = self._take(fresh, list)
            out = out if out is not None else []
            self.memo[node[1]] = out
            out[:] = [self.build(x, old[i] if i < len(old) else None) for i, x in enumerate(node[2])]
            return out
        if tag == "T":
            f = fresh if type(fresh) is tuple else ()
            return tuple(self.build(x, f[i] if i < len(f) else None) for i, x in enumerate(node[1]))
        if tag == "D":
            old = dict(fresh) if type(fresh) is dict else {}
            out = self._take(fresh, dict)
            out = out if out is not None else {}
            self.memo[node[1]] = out
            out.clear()
            for k, x in node[2]:
                key = self.build(k, None)
                out[key] = self.build(x, old.get(key) if _hashable(key) else None)
            return out
        if tag == "S":
            out = self._take(fresh, set)
            out = out if out is not None else set()
            self.memo[node[1]] = out
            out.clear()
            out.update(self.build(x, None) for x in node[2])
            return out
        if tag == "Q":
            _, n, kind, items, maxlen = node
            t = _COLLECTION_TYPES.get(kind)
            if t is None:
                raise SnapshotError(f"snapshot: unknown collection {kind!r} (corrupt file)")
            old = fresh if type(fresh) is t else None
            out = self._take(old, t) if old is not None and (t is not deque or old.maxlen == maxlen) else None
            if out is None:
                out = deque(maxlen=maxlen) if t is deque else t()
            self.memo[n] = out
            if t is deque:
                out.clear()
                out.extend(self.build(x, None) for x in items)
            else:
                before = dict(out)
                out.clear()
                for k, x in items:
                    key = self.build(k, None)
                    out[key] = self.build(x, before.get(key) if _hashable(key) else None)
            return out
        if tag == "F":
            return frozenset(self.build(x, None) for x in node[1])
        if tag == "A":
            out = self._take(fresh, bytearray) if type(fresh) is bytearray and len(fresh) == len(node[2]) else None
            out = out if out is not None else bytearray(len(node[2]))
            out[:] = node[2]
            self.memo[node[1]] = out
            return out
        if tag == "P":
            _, n, size, pages = node
            kind = type(fresh)
            out = self._take(fresh, kind) if kind in (bytearray, mmap.mmap) and len(fresh) == size else None
            if out is None:
                out = bytearray(size)
            elif kind is mmap.mmap:
                out.madvise(mmap.MADV_DONTNEED)  # private anonymous pages read as zero again
            else:
                out[:] = bytes(size)             # in place: views of it (a VM's partition) stay valid
            for i, data in pages.items():
                out[i * PAGE:i * PAGE + len(data)] = data
            self.memo[n] = out
            return out
        if tag == "K":
            return _class(node[1], node[2])
        if tag == "C":
            return itertools.count(node[1])
        if tag == "M":
            owner = self.build(node[1], fresh.__self__ if isinstance(fresh, types.MethodType) else None)
            return getattr(owner, node[2])
        if tag == "O":
            _, n, module, qualname, attrs = node
            cls = _class(module, qualname)
            obj = self._take(fresh, cls)
            obj = obj if obj is not None else cls.__new__(cls)
            self.memo[n] = obj
            current = _attrs(obj) if obj is fresh else {}
            for k, x in attrs.items():
                value = self.build(x, current.get(k))
                if x == ("W",) and k not in current:
                    continue
                object.__setattr__(obj, k, value)
            return obj
        raise SnapshotError(f"snapshot: unknown record {tag!r} (corrupt file)")


def _hashable(k) -> bool:
    try:
        hash(k)
        return True
    except TypeError:
        return False


def _class(module: str, qualname: str):
    if not module.startswith("trapvisor."):
        raise SnapshotError(f"snapshot: refers to {module}.{qualname}, not a trapvisor class (corrupt file)")
    import importlib
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SnapshotError(f"snapshot: class {module}.{qualname} does not exist in this trapvisor")
    return obj


def capture(monitor) -> object:
    """The state tree of a monitor and everything it reaches (plain data)."""
    return _Saver().save(monitor)


def apply(tree, fresh_monitor) -> None:
    """Lay a captured state over a freshly built monitor of the same options, then drop
    what the CPUs cached (decoded blocks; they are decoded again)."""
    _Loader().build(tree, fresh_monitor)
    for cpu in machine_cpus(fresh_monitor):
        cpu.cache.clear()
        cpu.page_blocks.clear()
        cpu.code_pages[:] = bytes(len(cpu.code_pages))
        cpu.set_cpl(cpu.cpl)          # the TLB of the current privilege, alignment checking
    fresh_monitor.deadline = None
    fresh_monitor.start_clock()


def machine_cpus(monitor) -> list:
    out = []
    pc = getattr(monitor, "pc", None)
    if pc is not None:
        out.append(pc.cpu)
    vm = getattr(monitor, "vm", None)
    if vm is not None:
        out.append(vm.vcpu)
    host = getattr(monitor, "host", None)
    if host is not None and hasattr(host, "cache") and host not in out:
        out.append(host)
    return out


# -- the file ----------------------------------------------------------------------------

def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_kernel(options: dict) -> None:
    """The kernel a snapshot was taken of must still be there, unchanged (its code is in RAM,
    but a restore builds the machine from it first)."""
    path = options.get("kernel")
    if not path or not os.path.exists(path):
        raise SnapshotError(f"the snapshot's kernel {path} is gone; rebuild it (make guests) or restore elsewhere")
    if file_digest(path) != options.get("kernel_sha256"):
        raise SnapshotError(f"the snapshot's kernel {path} has changed since the snapshot was taken")

class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise SnapshotError(f"snapshot: the file asks for {module}.{name}; snapshots hold plain data only "
                            "(corrupt or not a snapshot)")


def save(path: str, monitor, options: dict) -> int:
    """Write a snapshot of ``monitor`` (built from ``options``) to ``path``; returns its size."""
    payload = zlib.compress(pickle.dumps({"options": options, "state": capture(monitor),
                                          "steps": monitor.steps()}, protocol=4), 1)
    data = MAGIC + struct.pack("<I", VERSION) + hashlib.sha256(payload).digest() + payload
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write snapshot {path}: {e.strerror or e}") from None
    return len(data)


def load(path: str) -> dict:
    """Read a snapshot file: {"options", "state", "steps"}; SnapshotError if it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SnapshotError(f"cannot read snapshot {path}: {e.strerror or e}") from None
    return decode(data, path)


def decode(data: bytes, path: str = "snapshot") -> dict:
    head = len(MAGIC)
    if not data.startswith(MAGIC):
        raise SnapshotError(f"{path}: not a trapvisor snapshot")
    if len(data) < head + 36:
        raise SnapshotError(f"{path}: corrupt snapshot (truncated header)")
    (version,) = struct.unpack_from("<I", data, head)
    if version != VERSION:
        raise SnapshotError(f"{path}: snapshot format version {version}; this trapvisor reads version {VERSION}")
    digest, payload = data[head + 4:head + 36], data[head + 36:]
    if hashlib.sha256(payload).digest() != digest:
        raise SnapshotError(f"{path}: corrupt snapshot (checksum mismatch)")
    try:
        content = _PlainUnpickler(io.BytesIO(zlib.decompress(payload))).load()
    except SnapshotError:
        raise
    except Exception as e:          # noqa: BLE001 - any decoding failure is a corrupt file
        raise SnapshotError(f"{path}: corrupt snapshot ({type(e).__name__})") from None
    if not isinstance(content, dict) or not {"options", "state", "steps"} <= set(content):
        raise SnapshotError(f"{path}: corrupt snapshot (no machine state)")
    return content
