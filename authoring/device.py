"""Devices: "cpu" (numpy) today; "cuda" (cupy) arrives with GPU support.

Example:
    >>> device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import numpy as np


class device:  # noqa: N801  (lower-case like torch.device)
    """Where a tensor's array lives. Compares equal to its type string: `device("cpu") == "cpu"`."""

    __slots__ = ("type",)

    def __init__(self, spec="cpu"):
        spec = spec.type if isinstance(spec, device) else str(spec)
        kind = spec.split(":")[0]
        if kind == "cuda":
            raise RuntimeError(
                f"device {spec!r}: CUDA support is not available yet in modelkit.authoring "
                "(it arrives with GPU support through cupy); use device='cpu'")
        if kind != "cpu":
            raise RuntimeError(f"unknown device {spec!r}; expected 'cpu'")
        self.type = "cpu"

    def __repr__(self):
        return f"device(type='{self.type}')"

    def __str__(self):
        return self.type

    def __eq__(self, other):
        if isinstance(other, str):
            return other.split(":")[0] == self.type
        return isinstance(other, device) and other.type == self.type

    def __hash__(self):
        return hash(self.type)


CPU = device("cpu")


def check(spec) -> device:
    """Validate a user's device argument (None means cpu).

    Example:
        >>> check(None)
        device(type='cpu')
    """
    if spec is None or spec is CPU:
        return CPU
    return device(spec)



def array_module(array):
    """The array module (`xp`) that holds `array`: numpy for every cpu array (cupy joins with
    GPU support).

    Example:
        >>> array_module(np.zeros(2)) is np
        True
    """
    return np
