"""Checking the command line: argparse types for every kind of option value, and the parser.

Each ``type=`` here turns one option's text into its value or rejects it
with one line naming what was wrong, at parse time, before any guest is
built or any VM exists: sizes and counts with their ranges, files that must
be readable, paths that must be writable, hexadecimal addresses, regular
expressions, cost models, technique lists.  :class:`Parser` makes every
argparse error one ``trapvisor: error: ...`` line with exit status 2, as
:class:`~trapvisor.errors.UserError` is everywhere else.

Checks that need more than one option (one the chosen path cannot honour)
are each command's own (``check_*`` in ``run.py``, ``compare.py`` ...).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re

from ..errors import UserError

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
MIN_MEMORY = 2 << 20
MAX_MEMORY = 3 << 30


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: a UserError instead of usage and exit."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        raise UserError(f"{command}: {message}" if command else message)


class OptionError(argparse.ArgumentTypeError):
    """A bad option value; argparse names the option in front of the message."""


def memory_size(text: str) -> int:
    """'128M' -> bytes.  A bare number is MiB, as QEMU's -m takes it."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    num = t[:-1] if unit else t
    try:
        value = int(num)
    except ValueError:
        raise OptionError(f"bad memory size {text!r}: expected e.g. 128M, 1G or 64 (MiB)") from None
    size = value * _UNITS[unit or "M"]
    if size < MIN_MEMORY or size > MAX_MEMORY or size % 4096:
        raise OptionError(f"bad memory size {text!r}: must be between 2 MiB and 3 GiB, a multiple of 4 KiB")
    return size


def at_least_one(what: str):
    """A type: a whole number >= 1, else one line naming ``what``."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise OptionError(f"bad {what} {text!r}: expected a whole number, at least 1")
        return n
    return parse


def seconds(text: str) -> float:
    """A time limit: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise OptionError(f"bad time limit {text!r}: expected a number of seconds above 0")
    return value


def hex_address(text: str) -> int:
    """A 32-bit physical address in hexadecimal, with or without 0x."""
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 32:
        raise OptionError(f"bad address {text!r}: expected a hexadecimal physical address below 4 GiB, "
                          "e.g. 0x100000")
    return value


def output_regex(text: str) -> str:
    """A regular expression over the guest's console bytes (compiled as KvmMachine compiles it)."""
    try:
        re.compile(text.encode(), re.M)
    except (re.error, UnicodeEncodeError) as e:
        raise OptionError(f"bad regular expression {text!r}: {e}") from None
    return text


def file_problem(path: str, what: str) -> str | None:
    """Why ``path`` cannot be read as ``what`` (None: it can)."""
    if not os.path.exists(path):
        return f"{what} file not found: {path}"
    if os.path.isdir(path):
        return f"{what} {path} is a directory, not a file"
    if not os.access(path, os.R_OK):
        return f"{what} {path} is not readable"
    return None


def _path_type(problem_of, what: str):
    """An argparse type that keeps a path for which ``problem_of(path, what)`` finds nothing."""
    def parse(text: str) -> str:
        problem = problem_of(text, what)
        if problem:
            raise OptionError(problem)
        return text
    return parse


def readable_file(what: str):
    """A type: an existing, readable file that is not a directory."""
    return _path_type(file_problem, what)


def output_file_problem(path: str, what: str) -> str | None:
    """Why ``path`` cannot be written as ``what`` (None: it can be created or overwritten)."""
    if not path:
        return f"{what}: an empty path"
    if os.path.isdir(path):
        return f"{what} {path} is a directory, not a file"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else f"{what} {path} is not writable"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"{what} {path}: no such directory {folder}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{what} {path}: directory {folder} is not writable"
    return None


def writable_file(what: str):
    """A type: a file path that can be created or overwritten (not a directory)."""
    return _path_type(output_file_problem, what)


def open_output(path: str, what: str):
    """Open a checked output path for writing text; a one-line UserError if that still fails."""
    try:
        return open(path, "w")
    except OSError as e:
        raise UserError(f"cannot write {what} {path}: {e.strerror or e}") from None


def kernel(text: str) -> str:
    """A kernel: ``guest:NAME`` naming a bundled guest, or a readable file."""
    if text.startswith("guest:"):
        from ..guests import LINUX_GUEST, GuestBuildError, get_guest
        name = text[len("guest:"):]
        if not name:
            raise OptionError("empty guest name in 'guest:' (try guest:tvos)")
        if name == LINUX_GUEST:          # Debian's kernel, fetched on first use (docs/linux.md)
            return text
        try:
            get_guest(name)
        except GuestBuildError as e:
            raise OptionError(str(e)) from None
        return text
    return readable_file("kernel")(text)


def cost_model(text: str):
    """A TOML cost model: readable, well-formed, known keys, non-negative whole numbers."""
    from ..vmm.costmodel import CostModel
    problem = file_problem(text, "cost model")
    if problem:
        raise OptionError(problem)
    try:
        return CostModel.load(text)
    except UserError as e:
        raise OptionError(str(e)) from None


def technique(text: str) -> str:
    """A registered technique's name (``vmm/monitor.py``)."""
    from ..vmm.monitor import registered
    known = registered()
    if text not in known:
        raise OptionError(f"unknown technique {text!r}; known: {', '.join(known)}")
    return text


def technique_list(text: str) -> list[str]:
    """Comma-separated technique names, each registered and given once."""
    from ..vmm.monitor import registered
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise OptionError(f"no technique in {text!r}; known: {', '.join(registered())}")
    for name in names:
        technique(name)
        if names.count(name) > 1:
            raise OptionError(f"technique {name!r} given twice")
    return names


def resolve_kernel(spec: str) -> str:
    """The file to load for a checked kernel argument (builds a bundled guest on first use)."""
    from ..guests import resolve_kernel as resolve
    return str(resolve(spec))


def refuse(option: str, why: str) -> None:
    """An option the chosen path cannot honour: one line naming it."""
    raise UserError(f"{option}: {why}")


@contextlib.contextmanager
def optional_output(path: str | None, what: str):
    """An output file open for the duration of a run, or None when no path was given."""
    if path is None:
        yield None
        return
    f = open_output(path, what)
    try:
        yield f
    finally:
        f.close()
