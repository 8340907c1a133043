"""`detect_anomaly`: find the op, and the user's line, that first produced NaN/Inf.

While on, every graph node records the user's file:line (off by default: it costs a frame
walk per op), each op's forward output is checked for NaN/Inf that its finite inputs did not
carry, and each vjp's gradients likewise; the first offender raises RuntimeError naming both.

Example:
    >>> import modelkit.authoring as mk
    >>> with detect_anomaly():
    ...     try:
    ...         mk.log(mk.tensor([-1.0]))
    ...     except RuntimeError as e:
    ...         print(str(e).split(" at ")[0])
    detect_anomaly: op 'log' produced NaN/Inf in its forward output
"""

from __future__ import annotations

import functools

from modelkit.authoring.grad_mode import state


class detect_anomaly:  # noqa: N801
    """Context manager and decorator turning anomaly detection on (`check_nan=False`: off)."""

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan

    def __enter__(self):
        self._previous = state.anomaly
        state.anomaly = self.check_nan

    def __exit__(self, *exc):
        state.anomaly = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return wrapper


def set_detect_anomaly(mode: bool) -> None:
    """Turn anomaly detection on or off globally.

    Example:
        >>> set_detect_anomaly(False)
    """
    state.anomaly = bool(mode)


def is_anomaly_enabled() -> bool:
    """Whether anomaly detection is on.

    Example:
        >>> is_anomaly_enabled()
        False
    """
    return state.anomaly
