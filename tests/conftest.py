"""Hypothesis profiles for the whole suite.

``make test`` (and so CI) runs the property tests derandomized: the same
examples on every run, so a red CI means a change broke something, not that
a new random seed happened to find an old bug.  Exploration is a separate
job: ``make fuzz`` (TRAPVISOR_FUZZ=1) draws fresh random examples, more of
them, and keeps Hypothesis's example database so a failure it finds is
replayed first next time.
"""

import os

from hypothesis import settings

FUZZ = os.environ.get("TRAPVISOR_FUZZ", "") not in ("", "0")

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile("fuzz" if FUZZ else "deterministic")
