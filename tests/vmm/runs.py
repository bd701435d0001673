"""Runs shared by the VMM tests, each done once per test session (they take seconds)."""

from __future__ import annotations

import functools

from trapvisor.guests import build_guest
from trapvisor.vmm.costmodel import CostModel
from trapvisor.vmm.run import run_technique

LIMIT = 300_000_000


@functools.lru_cache(maxsize=None)
def run(technique: str, cmdline: str, cpu: str = "standard", guest: str = "tvos"):
    return run_technique(technique, str(build_guest(guest)), cmdline=cmdline,
                         max_instructions=LIMIT, costs=CostModel.default(), strict=cpu == "strict")


def probe_lines(output: bytes) -> dict[str, str]:
    """{'sgdt': 'base=... limit=...', ...} from the probe's 'probe NAME values' lines."""
    out = {}
    for line in output.decode("latin-1").splitlines():
        if line.startswith("probe "):
            rest = line[len("probe "):]
            for key in ("call far", "jmp far", "ret far"):
                if rest.startswith(key + " "):
                    out[key] = rest[len(key) + 1:]
                    break
            else:
                name, _, values = rest.partition(" ")
                out[name] = values
    return out
