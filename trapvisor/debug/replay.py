"""Record and replay on the simulated PC and every technique on it.

What can make two runs of the same kernel differ?  On the simulated machine
guest time is the instruction count (``machine/clock.py``): RDTSC, the PIT,
the local APIC timer and the RTC all follow it, the RTC starts at a fixed
date, and every interrupt comes from a device on that clock.  What is left
is what arrives from outside: bytes on COM1.  A recording (``--record FILE``)
therefore logs

* every chunk of serial input, with the guest step at which the UART took it
  (its poll timer is on the virtual clock, so the same steps poll again in a
  replay), and
* every external interrupt the CPU takes, with its step and vector, and the
  clock's parameters (ns per instruction, the RTC's start) in the header:
  not needed to reproduce the run, but checked by the replay, so that a
  divergence is found where it starts instead of at the end;

``--replay FILE`` builds the same machine (the options are in the header),
feeds the input from the log at the same steps and reports the first
divergence, if any.  The replay is stateless in the step (input and checks
are looked up by step), so gdb's reverse execution can re-run its past.

The file is JSON lines: a header ``{"format": FORMAT, "version": ..., "options":
..., "clock": ...}``, then ``{"step": N, "input": HEX}`` and ``{"step": N,
"interrupt": V}`` records, then ``{"end": N}``.
"""

from __future__ import annotations

import json

from ..errors import UserError

FORMAT = "trapvisor-recording"
VERSION = 1


class ReplayError(UserError):
    """A recording that cannot be replayed (one line)."""


def _intc(monitor):
    machine = getattr(monitor, "pc", None) or monitor.vm
    return machine.devices.intc


def _clock_facts(monitor) -> dict:
    machine = getattr(monitor, "pc", None) or monitor.vm
    rtc = machine.devices.rtc
    return {"ns_per_instruction": machine.clock.ns_per_instruction,
            "rtc_start": getattr(rtc, "_base_seconds", None)}


class Recorder:
    """``--record FILE``: wraps the live input source; logs input and interrupts."""

    def __init__(self, path: str, options: dict):
        try:
            self.f = open(path, "w")
        except OSError as e:
            raise UserError(f"cannot write recording {path}: {e.strerror or e}") from None
        self.options = options
        self.steps = lambda: 0
        self.high = -1            # the last step logged (a re-run of the past logs nothing twice)
        self.events = 0

    def input_source(self, live):
        def source():
            data = live() if live is not None else b""
            if data:
                self._log({"step": self.steps(), "input": data.hex()})
            return data
        return source

    def attach(self, monitor) -> None:
        self.steps = monitor.steps
        self.f.write(json.dumps({"format": FORMAT, "version": VERSION, "options": self.options,
                                 "clock": _clock_facts(monitor)}) + "\n")
        intc = _intc(monitor)
        acknowledge = intc.acknowledge

        def logged():
            vector = acknowledge()
            if vector is not None:
                self._log({"step": self.steps(), "interrupt": vector})
            return vector
        intc.acknowledge = logged

    def _log(self, record: dict) -> None:
        step = record["step"]
        if step < self.high:
            return
        self.high = step
        self.events += 1
        self.f.write(json.dumps(record) + "\n")

    def close(self, monitor) -> None:
        self.f.write(json.dumps({"end": monitor.steps()}) + "\n")
        self.f.close()


class Replayer:
    """``--replay FILE``: the recorded input at the recorded steps, and the checks."""

    def __init__(self, path: str):
        self.path = path
        self.inputs: dict[int, bytes] = {}
        self.interrupts: dict[int, list] = {}
        self.end = None
        self.divergence: str | None = None
        self.steps = lambda: 0
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise ReplayError(f"cannot read recording {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ReplayError(f"{path}: not a trapvisor recording") from None
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ReplayError(f"{path}: not a trapvisor recording")
        if header.get("version") != VERSION:
            raise ReplayError(f"{path}: recording format version {header.get('version')}; "
                              f"this trapvisor reads version {VERSION}")
        self.options, self.clock = header.get("options"), header.get("clock")
        for n, line in enumerate(lines[1:], 2):
            try:
                r = json.loads(line)
                if "input" in r:
                    self.inputs[int(r["step"])] = self.inputs.get(int(r["step"]), b"") + bytes.fromhex(r["input"])
                elif "interrupt" in r:
                    self.interrupts.setdefault(int(r["step"]), []).append(int(r["interrupt"]))
                elif "end" in r:
                    self.end = int(r["end"])
                else:
                    raise ValueError("unknown record")
            except (ValueError, TypeError, KeyError):
                raise ReplayError(f"{path}: corrupt recording (line {n})") from None
        if not isinstance(self.options, dict) or self.end is None:
            raise ReplayError(f"{path}: corrupt recording (no options or no end: was the run cut short?)")

    def input_source(self):
        def source():
            return self.inputs.get(self.steps(), b"")
        return source

    def attach(self, monitor) -> None:
        self.steps = monitor.steps
        facts = _clock_facts(monitor)
        if facts != self.clock:
            self.divergence = f"the machine's clock differs from the recording's ({facts} vs {self.clock})"
        intc = _intc(monitor)
        acknowledge = intc.acknowledge
        seen: dict[int, int] = {}

        def checked():
            vector = acknowledge()
            if vector is not None and self.divergence is None:
                step = self.steps()
                expected = self.interrupts.get(step, [])
                k = seen.get(step, 0)
                seen[step] = k + 1
                if k >= len(expected) or expected[k] != vector:
                    self.divergence = (f"interrupt vector {vector:#x} at step {step:,}, which the recording "
                                       f"does not have there")
            return vector
        intc.acknowledge = checked

    def finish(self, monitor) -> str | None:
        """The first divergence, or None when the replay matched the recording to its end."""
        if self.divergence is None and monitor.steps() != self.end:
            self.divergence = f"the replay ended at step {monitor.steps():,}; the recording at {self.end:,}"
        return self.divergence
