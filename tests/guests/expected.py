"""Independent Python models of what tvos's workloads compute.

Each function mirrors the C code's arithmetic (guests/os/user/work.c and
guests/os/kernel/kwork.c) so the tests check the guest's checksums against
a second implementation, not just against an earlier run.  tvos's running
checksums feed bytes into one CRC-32 (IEEE) stream, so each is zlib.crc32
of the concatenated bytes.
"""

import struct
import zlib

M32 = 0xFFFFFFFF


def words(*vals: int) -> bytes:
    return struct.pack(f"<{len(vals)}I", *(v & M32 for v in vals))


def compute(n: int) -> int:
    x = 0x12345678
    crc = 0
    for _ in range(n):
        buf = []
        for _ in range(64 * 1024 // 4):
            x ^= (x << 13) & M32
            x ^= x >> 17
            x ^= (x << 5) & M32
            buf.append(x)
        crc = zlib.crc32(struct.pack(f"<{len(buf)}I", *buf), crc)
    return crc


def syscall(n: int, pid: int = 1) -> int:
    return zlib.crc32(words(n, pid))


def ctxswitch(n: int) -> int:
    return zlib.crc32(words(n, n))


def pgfault(n: int) -> int:
    return zlib.crc32(b"".join(words(((i * 2654435761) & M32) ^ (i & 1023)) for i in range(n)))


def ptemod(n: int) -> int:
    return zlib.crc32(b"".join(words(i ^ 0x5A5A5A5A) for i in range(n)))


def forkwait(n: int) -> int:
    return zlib.crc32(b"".join(words(i & 0xFF) for i in range(n)))


def divzero(n: int) -> int:
    return zlib.crc32(b"".join(words(i + 7) for i in range(n)) + words(n))


def io(n: int) -> int:
    return zlib.crc32(bytes((i * 37 + 11) & 0xFF for i in range(n)))


def crwrite(n: int) -> int:
    return zlib.crc32(bytes(0 if i & 1 else 1 for i in range(n)))


# mixed: (name, model, scale) in fork order; init is pid 1, workers 2..7.
MIXED_WORKERS = [
    ("compute", compute, 1),
    ("syscall", None, 500),
    ("pgfault", pgfault, 50),
    ("ptemod", ptemod, 50),
    ("forkwait", forkwait, 4),
    ("divzero", divzero, 50),
]


def mixed(n: int) -> tuple[int, list[tuple[str, int, int]]]:
    """(checksum, [(worker, iterations, checksum), ...])."""
    lines = []
    data = words(compute(n))
    for k, (name, model, scale) in enumerate(MIXED_WORKERS):
        iters = n * scale
        value = syscall(iters, pid=2 + k) if model is None else model(iters)
        lines.append((name, iters, value))
        data += words(value)
    return zlib.crc32(data), lines


USER = {"compute": compute, "syscall": syscall, "ctxswitch": ctxswitch,
        "pgfault": pgfault, "ptemod": ptemod, "forkwait": forkwait,
        "divzero": divzero}
KERNEL = {"io": io, "crwrite": crwrite}

# What workload=probe prints on any correct platform (docs/guest-os.md
# explains each line).
PROBE_LINES = [
    "probe sgdt base=0x00101800 limit=0x002f loaded=yes",
    "probe sidt base=0x00101000 limit=0x07ff loaded=yes",
    "probe sldt selector=0x0000",
    "probe str selector=0x0028 rpl=0",
    "probe smsw msw=0x0033 pe=1 matches-cr0=yes",
    "probe pushf if-after-sti=1 if-after-cli=0 iopl=0 reserved1=1",
    "probe popf if-cleared=0 iopl-set=3",
    "probe lar kcode=0x00c09b00 kdata=0x00c09300 ucode=0x00c0fb00 tss=0x00008b00 null=fail",
    "probe lsl kcode=0xffffffff tss=0x00000067",
    "probe verr kcode=1 kdata=1 ucode=1 tss=0",
    "probe verw kcode=0 kdata=1 udata=1",
    "probe push cs=0x0008 ss=0x0010 cpl=0",
    "probe pop ds=0x0023 ss=0x0010",
    "probe mov cs=0x0008 ss=0x0010 ds=0x0010 es=0x0010",
    "probe call far pushed-cs=0x0008 returned=yes",
    "probe jmp far cs=0x0008",
    "probe ret far cs=0x0008",
    "probe int vector=0x81 frame-cs=0x0008 returned=yes",
]


def probe() -> int:
    return zlib.crc32("".join(line + "\n" for line in PROBE_LINES).encode())


SELFTESTS = ["kalloc", "vm", "sched-order", "elf", "cmdline", "fmt", "timer"]


def selftest() -> int:
    return zlib.crc32("".join(f"selftest {t} ok\n" for t in SELFTESTS).encode())


# workload=protect: (check, exit status = 128 + the vector that killed it)
PROTECT = [
    ("read-kernel-memory", 142), ("write-page-zero", 142), ("cli", 141),
    ("out", 141), ("hlt", 141), ("mov-from-cr3", 141), ("int-kernel-gate", 141),
    ("ud2", 134), ("divide-uncaught", 128),
]


def protect(n: int) -> int:
    return zlib.crc32(words(*[s for _, s in PROTECT]) * n)
