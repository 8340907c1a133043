"""Checking `Session.run` feeds against the model's input spec, precomputed per input at load.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import ValueInfo
    >>> checks = [InputCheck.of(ValueInfo("x", "float32", ("batch", 4)), slot=2)]
    >>> [(slot, a.shape) for slot, a in check_feeds(checks, {"x": np.zeros((3, 4), np.float32)})]
    [(2, (3, 4))]
    >>> check_feeds(checks, {"x": np.zeros((3, 5), np.float32)})
    Traceback (most recent call last):
    ...
    modelkit.edge_runtime.errors.InvalidInputError: input 'x': dim 1 must be 4 (expected shape ('batch', 4)), got shape (3, 5)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np

from modelkit.edge_runtime.errors import InvalidInputError
from modelkit.edge_runtime.format.model import ValueInfo

_STRING_KINDS = "OUS"


@dataclass(frozen=True)
class InputCheck:
    """One graph input: its slot, expected dtype (None for string and bfloat16), rank and dims."""

    name: str
    slot: int
    dtype_name: str
    dtype: Optional[np.dtype]
    shape: Optional[tuple]
    static_dims: tuple[tuple[int, int], ...]
    symbolic_dims: tuple[tuple[int, str], ...]
    required: bool = True

    @classmethod
    def of(cls, info: ValueInfo, slot: int, required: bool = True) -> "InputCheck":
        """The check for graph input `info`.

        Example:
            >>> InputCheck.of(ValueInfo("x", "int64", (2, "n")), 5).symbolic_dims
            ((1, 'n'),)
        """
        shape = tuple(info.shape) if info.shape is not None else None
        dims = list(enumerate(shape or ()))
        return cls(info.name, slot, info.dtype, _numpy_dtype(info.dtype), shape,
                   tuple((a, d) for a, d in dims if isinstance(d, int)),
                   tuple((a, d) for a, d in dims if isinstance(d, str)), required)


def check_feeds(checks: list[InputCheck], feeds) -> list[tuple[int, object]]:
    """(slot, array) for every feed, after checking names, dtypes, ranks, static dims and that
    each symbolic dim has one size across all inputs; else `InvalidInputError`.

    Example: see the module docstring.
    """
    if not isinstance(feeds, Mapping):
        raise InvalidInputError(f"feeds must be a dict of input name -> array, got"
                                f" {type(feeds).__name__}; inputs: {[c.name for c in checks]}")
    known = sum(1 for c in checks if c.name in feeds)
    if known != len(feeds):
        names = {c.name for c in checks}
        raise InvalidInputError(f"unknown input(s) {sorted(str(k) for k in feeds if k not in names)};"
                                f" the model's inputs are {[c.name for c in checks]}")
    placed = []
    bound: dict[str, tuple[int, str, int]] = {}  # dim name -> (size, input, axis)
    for check in checks:
        value = feeds.get(check.name)
        if value is None:
            if check.required:
                raise InvalidInputError(f"missing input '{check.name}' ({check.dtype_name}"
                                        f"{list(check.shape) if check.shape is not None else ''})")
            continue
        array = _as_array(check, value)
        _check_shape(check, array, bound)
        placed.append((check.slot, array))
    return placed


def _as_array(check: InputCheck, value):
    """The feed as an array of the expected dtype: arrays must match exactly; Python lists and
    scalars are converted when that loses nothing (ints to a float input, not floats to int)."""
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple, int, float, bool)):
            value = _from_python(check, value)
        else:
            value = np.asarray(value)
    if check.dtype is None:
        if not _matches_unnamed_dtype(check.dtype_name, value.dtype):
            raise InvalidInputError(f"input '{check.name}': expected dtype {check.dtype_name},"
                                    f" got {value.dtype}")
    elif value.dtype != check.dtype:
        raise InvalidInputError(f"input '{check.name}': expected dtype {check.dtype_name}, got"
                                f" {value.dtype}")
    return value


def _from_python(check: InputCheck, value):
    try:
        converted = np.asarray(value)
    except ValueError as e:
        raise InvalidInputError(f"input '{check.name}': cannot make an array of the given"
                                f" {type(value).__name__}: {e}") from None
    if check.dtype is not None and converted.dtype != check.dtype and (
            converted.dtype.kind in _STRING_KINDS or not _convertible(converted, check.dtype)):
        raise InvalidInputError(f"input '{check.name}': expected dtype {check.dtype_name}, got a"
                                f" {type(value).__name__} of {converted.dtype}")
    if check.dtype is None or converted.dtype == check.dtype:
        return converted
    _check_range(check, converted)
    return converted.astype(check.dtype)


def _convertible(converted: np.ndarray, dtype: np.dtype) -> bool:
    # An empty list carries no values to lose; Python ints go to any integer dtype they fit
    # (checked by _check_range), so [1, 2] feeds a uint8 input.
    return (converted.size == 0 or np.can_cast(converted.dtype, dtype, "same_kind")
            or (converted.dtype.kind in "iu" and dtype.kind in "iu"))


def _check_range(check: InputCheck, converted: np.ndarray) -> None:
    """Refuse Python numbers that the input's dtype cannot hold, rather than wrap them around
    (300 as int8 is 44) or turn them into infinities."""
    if converted.size == 0 or converted.dtype.kind not in "iuf":
        return
    if check.dtype.kind in "iu":
        info = np.iinfo(check.dtype)
        low, high = converted.min(), converted.max()
        if low < info.min or high > info.max:
            raise InvalidInputError(f"input '{check.name}': values [{low}, {high}] do not fit"
                                    f" {check.dtype_name} [{info.min}, {info.max}]")
    elif check.dtype.kind == "f":
        with np.errstate(over="ignore"):
            lost = np.isfinite(converted) & ~np.isfinite(converted.astype(check.dtype))
        if lost.any():
            raise InvalidInputError(f"input '{check.name}': {converted[lost][0]} is beyond the"
                                    f" largest {check.dtype_name}, {np.finfo(check.dtype).max}")


def _check_shape(check: InputCheck, array, bound: dict) -> None:
    if check.shape is None:
        return
    shape = array.shape
    if len(shape) != len(check.shape):
        raise InvalidInputError(f"input '{check.name}': expected rank {len(check.shape)} (shape"
                                f" {check.shape}), got shape {shape}")
    for axis, size in check.static_dims:
        if shape[axis] != size:
            raise InvalidInputError(f"input '{check.name}': dim {axis} must be {size} (expected"
                                    f" shape {check.shape}), got shape {shape}")
    for axis, dim in check.symbolic_dims:
        first = bound.setdefault(dim, (shape[axis], check.name, axis))
        if first[0] != shape[axis]:
            raise InvalidInputError(
                f"input '{check.name}': dim {axis} ('{dim}') is {shape[axis]}, but input"
                f" '{first[1]}' dim {first[2]} ('{dim}') is {first[0]}; a named dim must have one"
                f" size across inputs")


def _numpy_dtype(name: str) -> Optional[np.dtype]:
    """None for the types numpy has no builtin dtype for (compared by `_matches_unnamed_dtype`)."""
    return None if name in ("string", "bfloat16") else np.dtype(name)


def _matches_unnamed_dtype(name: str, dtype: np.dtype) -> bool:
    # bfloat16 arrays come from ml_dtypes (what onnx uses), which the runtime does not import
    return dtype.kind in _STRING_KINDS if name == "string" else dtype.name == name
