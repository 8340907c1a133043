"""Tensor element types, spelled as in PyTorch (`mk.float32`, `mk.int64`, ...).

Example:
    >>> import modelkit.authoring as mk
    >>> mk.float32, mk.float32.is_floating_point, mk.tensor([1, 2]).dtype
    (modelkit.float32, True, modelkit.int64)
"""

from __future__ import annotations

import builtins

import numpy as np


class dtype:  # noqa: N801  (lower-case like torch.dtype)
    """One element type; `numpy` is the matching numpy dtype."""

    __slots__ = ("name", "numpy", "is_floating_point", "is_signed", "itemsize")

    def __init__(self, name: str):
        self.name = name
        self.numpy = np.dtype(name)
        self.is_floating_point = self.numpy.kind == "f"
        self.is_signed = self.numpy.kind in "fi"
        self.itemsize = self.numpy.itemsize

    def __repr__(self):
        return f"modelkit.{self.name}"

    def __reduce__(self):
        return (from_any, (self.name,))


float16 = dtype("float16")
float32 = dtype("float32")
float64 = dtype("float64")
uint8 = dtype("uint8")
int8 = dtype("int8")
int16 = dtype("int16")
int32 = dtype("int32")
int64 = dtype("int64")
bool_ = dtype("bool")

half, float, double = float16, float32, float64  # noqa: A001  (torch's aliases)
short, int, long = int16, int32, int64  # noqa: A001

ALL = (float16, float32, float64, uint8, int8, int16, int32, int64, bool_)
_BY_NUMPY = {d.numpy: d for d in ALL}
_BY_NAME = {d.name: d for d in ALL}
_BY_PYTHON = {builtins.bool: bool_, builtins.int: int64, builtins.float: float32}

DEFAULT_FLOAT = float32


def from_numpy(np_dtype) -> dtype:
    """The modelkit dtype of a numpy dtype; TypeError for dtypes a Tensor cannot hold.

    Example:
        >>> from_numpy(np.dtype("float64"))
        modelkit.float64
    """
    found = _BY_NUMPY.get(np.dtype(np_dtype))
    if found is None:
        supported = ", ".join(d.name for d in ALL)
        raise TypeError(f"can't convert numpy dtype {np.dtype(np_dtype)} to a modelkit dtype; "
                        f"supported: {supported}")
    return found


def from_any(spec) -> dtype:
    """Accept a modelkit dtype, a numpy dtype or its name ("float32"), or a Python type.

    Example:
        >>> from_any("int32"), from_any(np.float16)
        (modelkit.int32, modelkit.float16)
    """
    if isinstance(spec, dtype):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]
    if spec in _BY_PYTHON:
        return _BY_PYTHON[spec]
    try:
        return from_numpy(spec)
    except TypeError:
        raise TypeError(f"{spec!r} is not a dtype; use one of "
                        f"{', '.join('modelkit.' + d.name for d in ALL)}") from None


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """PyTorch's type promotion between two tensors: a float dtype wins over any integer or
    bool dtype (numpy would widen int64 + float32 to float64); within a kind, the wider wins.

    Example:
        >>> promote(np.dtype("int64"), np.dtype("float32"))
        dtype('float32')
    """
    if a == b:
        return a
    a_float, b_float = a.kind == "f", b.kind == "f"
    if a_float != b_float:
        return a if a_float else b
    return np.promote_types(a, b)
