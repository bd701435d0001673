"""Guest MIPS of the CPU on compute-bound C kernels, closure tier vs block tier.

The kernel is freestanding C built with ``gcc -m32 -O2 -ffreestanding`` and
linked by ``ld -m elf_i386`` as a flat binary at 1 MiB.  Its entry turns
paging on itself (4 KiB pages identity-mapping 32 MiB, so every access goes
through the TLB path) and then runs one workload:

* ``crc32``: fill a buffer from a xorshift generator, then table-driven
  CRC-32 over it (the tvos ``compute`` workload's kernel);
* ``sieve``: sieve of Eratosthenes over a byte array, then count the primes.

The harness is a bare CPU (no devices): the kernel returns its checksum in
EAX and halts; the checksum is checked against a Python model, so a wrong
tier cannot post a figure.

``tvos`` runs the bundled guest OS's ``compute`` workload (the same CRC-32
kernel, in ring 3 under a paging kernel with timer interrupts) on the whole
simulated PC (``run_kernel``); the figure includes the boot.  The checksum
the guest prints must be the same in both tiers.  Each tier runs ``--runs`` times, alternating,
and the median is printed with the ratio.  MIPS are wall-clock; CPU-time
MIPS (``time.process_time``) are printed next to them because the machine
may be shared.

    .venv/bin/python benchmarks/mips.py                 # crc32 over 2 MiB
    .venv/bin/python benchmarks/mips.py --workload all --runs 5
    .venv/bin/python benchmarks/mips.py --tier block --profile   # cProfile the block tier
    .venv/bin/python benchmarks/mips.py --workload tvos --iterations 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from trapvisor.machine.bus import IoBus  # noqa: E402
from trapvisor.machine.cpu import CPU, enter_flat_protected_mode  # noqa: E402
from trapvisor.machine.memory import PhysicalMemory  # noqa: E402

LOAD = 0x100000
MEMORY = 32 << 20

KERNEL_C = r"""
typedef unsigned int u32;
typedef unsigned char u8;

#define BUF_MAX (4u << 20)
#define BUF_ADDR 0x800000u              /* 8 MiB: above the kernel, below the stack top */
static u32 crc_table[256];
static u32 pd[1024] __attribute__((aligned(4096)));
static u32 pt[8][1024] __attribute__((aligned(4096)));

/* Identity-map 32 MiB with 4 KiB pages and turn paging on. */
static void paging_on(void)
{
    for (u32 t = 0; t < 8; t++) {
        for (u32 i = 0; i < 1024; i++)
            pt[t][i] = ((t * 1024 + i) << 12) | 3;
        pd[t] = (u32)pt[t] | 3;
    }
    __asm__ volatile("mov %0, %%cr3" :: "r"(pd) : "memory");
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" :: "r"(cr0 | 0x80000000u) : "memory");
}

static u32 crc32_kernel(u32 rounds, u32 len)
{
    u8 *buf = (u8 *)BUF_ADDR;
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & -(c & 1));
        crc_table[i] = c;
    }
    u32 x = 0x12345678, crc = 0xffffffffu;
    for (u32 r = 0; r < rounds; r++) {
        u32 *w = (u32 *)buf;
        for (u32 i = 0; i < len / 4; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            w[i] = x;
        }
        for (u32 i = 0; i < len; i++)
            crc = (crc >> 8) ^ crc_table[(crc ^ buf[i]) & 0xff];
    }
    return ~crc;
}

static u32 sieve_kernel(u32 n)
{
    u8 *buf = (u8 *)BUF_ADDR;
    for (u32 i = 0; i < n; i++)
        buf[i] = 1;
    buf[0] = buf[1] = 0;
    for (u32 i = 2; i * i < n; i++)
        if (buf[i])
            for (u32 j = i * i; j < n; j += i)
                buf[j] = 0;
    u32 count = 0;
    for (u32 i = 0; i < n; i++)
        count += buf[i];
    return count;
}

u32 kmain(u32 which, u32 a, u32 b)
{
    paging_on();
    return which == 0 ? crc32_kernel(a, b) : sieve_kernel(a);
}
"""

START_S = r"""
.code32
.globl _start
_start:
    mov $0x7ff000, %esp
    push %edx
    push %ecx
    push %eax
    call kmain
    hlt
"""

CFLAGS = ["-m32", "-O2", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
          "-fno-asynchronous-unwind-tables", "-nostdlib"]


def build() -> bytes:
    d = tempfile.mkdtemp(prefix="mips-")
    with open(os.path.join(d, "k.c"), "w") as f:
        f.write(KERNEL_C)
    with open(os.path.join(d, "s.s"), "w") as f:
        f.write(START_S)
    run = lambda *cmd: subprocess.run(cmd, check=True, cwd=d, stderr=subprocess.PIPE)  # noqa: E731
    run("gcc", *CFLAGS, "-c", "k.c", "-o", "k.o")
    run("as", "--32", "s.s", "-o", "s.o")
    run("ld", "-m", "elf_i386", f"-Ttext={LOAD:#x}", "-e", "_start", "--oformat=binary",
        "s.o", "k.o", "-o", "k.bin")
    with open(os.path.join(d, "k.bin"), "rb") as f:
        return f.read()


# ------------------------------------------------------------- Python models
def model_crc32(rounds: int, length: int) -> int:
    x, crc = 0x12345678, 0
    for _ in range(rounds):
        words = []
        for _ in range(length // 4):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            words.append(x)
        crc = zlib.crc32(b"".join(w.to_bytes(4, "little") for w in words)[:length], crc)
    return crc


def model_sieve(n: int) -> int:
    s = bytearray([1]) * n
    s[0:2] = b"\0\0"
    i = 2
    while i * i < n:
        if s[i]:
            s[i * i::i] = bytes(len(range(i * i, n, i)))
        i += 1
    return sum(s)


WORKLOADS = {
    # name: (which, a, b, model) from the size in KiB
    "crc32": lambda kib: (0, 1, kib * 1024, lambda: model_crc32(1, kib * 1024)),
    "sieve": lambda kib: (1, kib * 1024, 0, lambda: model_sieve(kib * 1024)),
}


def run_once(image: bytes, which: int, a: int, b: int, block_tier: bool, profile=False):
    mem = PhysicalMemory(MEMORY)
    cpu = CPU(mem, IoBus())
    enter_flat_protected_mode(cpu)
    cpu.block_tier = block_tier
    mem.write(LOAD, image)
    cpu.eip = LOAD
    cpu.regs[0], cpu.regs[1], cpu.regs[2] = which, a, b
    if profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
    w0, c0 = time.perf_counter(), time.process_time()
    cpu.run()
    wall, cputime = time.perf_counter() - w0, time.process_time() - c0
    if profile:
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    if not cpu.halted and (cpu.stop is None or cpu.stop.reason != "halted forever"):
        raise SystemExit(f"kernel did not halt: {cpu.stop}\n{cpu.state_dump()}")
    if not cpu.paging:
        raise SystemExit("kernel ran without paging")
    return cpu.regs[0], cpu.icount, wall, cputime


def run_tvos(iterations: int, block_tier: bool):
    """tvos ``workload=compute`` on the simulated PC: (checksum line, instructions, wall, cpu)."""
    from trapvisor.guests import build_guest
    from trapvisor.machine.pc import run_kernel
    kernel = build_guest("tvos")
    out = bytearray()
    old = CPU.block_tier
    CPU.block_tier = block_tier
    try:
        c0 = time.process_time()
        r = run_kernel(kernel, cmdline=f"workload=compute iterations={iterations}",
                       serial_out=out.extend, max_seconds=3600)
        cputime = time.process_time() - c0
    finally:
        CPU.block_tier = old
    line = next((ln for ln in bytes(out).decode(errors="replace").splitlines()
                 if ln.startswith("result compute")), None)
    if line is None:
        raise SystemExit(f"tvos did not report a result: {r.stop_reason} {r.detail}")
    return line, r.instructions, r.seconds, cputime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", choices=[*WORKLOADS, "tvos", "all"], default="crc32")
    ap.add_argument("--iterations", type=int, default=16, help="tvos compute iterations (64 KiB each)")
    ap.add_argument("--kib", type=int, default=None,
                    help="data size in KiB (default: crc32 2048, sieve 1024)")
    ap.add_argument("--runs", type=int, default=3, help="runs per tier (median reported)")
    ap.add_argument("--tier", choices=["both", "closure", "block"], default="both")
    ap.add_argument("--profile", action="store_true", help="cProfile one run per tier")
    args = ap.parse_args(argv)

    print("$ " + " ".join([os.path.relpath(sys.executable), "benchmarks/mips.py", *(argv or sys.argv[1:])]))
    print(f"gcc {' '.join(CFLAGS)}; paging on (4 KiB pages); Python {sys.version.split()[0]}")
    image = build()
    names = [*WORKLOADS, "tvos"] if args.workload == "all" else [args.workload]
    tiers = {"both": [False, True], "closure": [False], "block": [True]}[args.tier]
    status = 0
    for name in names:
        if name == "tvos":
            res = {t: [] for t in tiers}
            lines = set()
            for _ in range(args.runs):
                for t in tiers:
                    line, n, wall, cputime = run_tvos(args.iterations, t)
                    lines.add(line)
                    res[t].append((n / wall / 1e6, n / cputime / 1e6, n))
            if len(lines) != 1:
                print(f"  tvos: the tiers disagree: {sorted(lines)}")
                status = 1
            status |= report(f"tvos compute ({args.iterations} x 64 KiB, with boot)", tiers, res)
            continue
        kib = args.kib or {"crc32": 2048, "sieve": 1024}[name]
        which, a, b, model = WORKLOADS[name](kib)
        expect = model()
        res = {t: [] for t in tiers}
        for _ in range(1 if args.profile else args.runs):
            for t in tiers:
                got, n, wall, cputime = run_once(image, which, a, b, t, args.profile)
                if got != expect:
                    print(f"  {name}: WRONG RESULT on the {'block' if t else 'closure'} tier: "
                          f"{got:#x}, expected {expect:#x}")
                    status = 1
                res[t].append((n / wall / 1e6, n / cputime / 1e6, n))
        report(f"{name} ({kib} KiB)", tiers, res)
    return status


def report(title: str, tiers, res) -> int:
    line = f"{title}, {res[tiers[0]][0][2] / 1e6:.1f} M instructions:"
    med = {}
    for t in tiers:
        w = statistics.median(r[0] for r in res[t])
        c = statistics.median(r[1] for r in res[t])
        med[t] = (w, c)
        line += f"  {'block' if t else 'closure'} tier {w:.2f} MIPS (cpu {c:.2f})"
    if len(tiers) == 2:
        line += f"  ratio x{med[True][0] / med[False][0]:.2f} (cpu x{med[True][1] / med[False][1]:.2f})"
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
