"""Shared settings of the fuzz targets: how many cases each runs, and the per-case guards.

`HYPOTHESIS_PROFILE` picks the profile: "quick" (the default, what `make test` runs: a few
hundred derandomized cases per target, so CI is repeatable) or "fuzz" (what `make fuzz` runs:
many more random cases per target). The settings are applied per test with `@fuzz(...)`
rather than as a global profile, so the rest of the suite's hypothesis tests are unaffected.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tracemalloc

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "quick")
if PROFILE not in ("quick", "fuzz"):
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: expected 'quick' or 'fuzz'")
FUZZ_MULTIPLIER = 40
"""`make fuzz` runs this many times the quick number of cases of every target."""


def fuzz(quick_examples: int, deadline_ms: float = 2000):
    """Hypothesis settings for one target: `quick_examples` cases in `make test`, 40 times as
    many random ones under `make fuzz`; `deadline_ms` is hypothesis' per-case time check."""
    quick = PROFILE == "quick"
    return settings(
        max_examples=quick_examples * (1 if quick else FUZZ_MULTIPLIER),
        deadline=deadline_ms,
        derandomize=quick,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )


class Hang(BaseException):
    """A case ran past its wall-clock limit (a BaseException, so no `except Exception` in the
    code under test can swallow it)."""


@contextlib.contextmanager
def wall_clock_limit(seconds: float):
    """Interrupt the body with `Hang` after `seconds` (SIGALRM: main thread only)."""
    def interrupt(*_):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def peak_memory():
    """Yields a one-element list that holds, after the body, the peak bytes allocated through
    Python and numpy (both report to tracemalloc) while the body ran."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
