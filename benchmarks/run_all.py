"""`make bench`: every benchmark, one after the other, figures printed."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ["mips.py"],
    ["vs_qemu.py"],
    ["techniques.py", "--scale", "0.5"],
    ["scheduler.py"],
    ["kvm_exit_roundtrip.py"],
    ["kvm_linux_boot.py", "--rounds", "1"],
]

status = 0
for argv in BENCHES:
    script = HERE / argv[0]
    if not script.exists():
        continue
    print(f"\n=== {' '.join(argv)}", flush=True)
    status |= subprocess.call([sys.executable, str(script), *argv[1:]])
raise SystemExit(status)
