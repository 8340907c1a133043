"""Reduce kernels (ReduceSum ... ReduceLogSumExp) and ArgMax / ArgMin, in ONNX semantics.

Reductions take their axes as an attribute in old opsets and as an optional int64 input since
opset 13 (ReduceSum) or 18 (the others); both forms share one implementation per op. Reducing
over an empty set gives the reduction's identity (0 for sums, 1 for products, -inf for max and
log-sums, +inf for min), as the ONNX spec requires.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.kernels.registry import lookup
    >>> x = np.float32([[1, 2], [3, 4]])
    >>> lookup("", "ReduceSum", 13).fn(np, x, np.int64([1]), keepdims=0)
    (array([3., 7.], dtype=float32),)
    >>> lookup("", "ReduceMax", 13).fn(np, x, axes=[0])
    (array([[3., 4.]], dtype=float32),)
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.edge_runtime.kernels.registry import register


def _accumulator(dtype):
    # float16 sums accumulate in float32 (as numpy's mean and onnxruntime do), others in place
    return np.float32 if dtype == np.float16 else dtype


def _sum(xp, x, axes, keepdims):
    total = xp.sum(x, axis=axes, keepdims=keepdims, dtype=_accumulator(x.dtype))
    return total.astype(x.dtype, copy=False)


def _mean(xp, x, axes, keepdims):
    total = xp.mean(x, axis=axes, keepdims=keepdims, dtype=_accumulator(x.dtype))
    return total.astype(x.dtype, copy=False)


def _prod(xp, x, axes, keepdims):
    total = xp.prod(x, axis=axes, keepdims=keepdims, dtype=_accumulator(x.dtype))
    return total.astype(x.dtype, copy=False)


def _extreme(name, empty_float):
    def reduce(xp, x, axes, keepdims):
        if x.size:
            return getattr(xp, name)(x, axis=axes, keepdims=keepdims)
        shape = xp.sum(x, axis=axes, keepdims=keepdims).shape
        if x.dtype.kind == "f":
            return xp.full(shape, empty_float, dtype=x.dtype)
        if x.dtype.kind == "b":
            return xp.full(shape, empty_float > 0, dtype=x.dtype)
        limits = np.iinfo(x.dtype)
        return xp.full(shape, limits.min if empty_float < 0 else limits.max, dtype=x.dtype)
    return reduce


def _l1(xp, x, axes, keepdims):
    return _sum(xp, xp.abs(x), axes, keepdims)


def _l2(xp, x, axes, keepdims):
    return xp.sqrt(_sum(xp, x * x, axes, keepdims)).astype(x.dtype, copy=False)


def _sum_square(xp, x, axes, keepdims):
    return _sum(xp, x * x, axes, keepdims)


def _log_sum(xp, x, axes, keepdims):
    return xp.log(_sum(xp, x, axes, keepdims))


def _log_sum_exp(xp, x, axes, keepdims):
    if not x.size:
        return xp.log(_sum(xp, x, axes, keepdims))
    peak = xp.max(x, axis=axes, keepdims=True)
    # an all -inf slice would give nan from (-inf) - (-inf); shifting by 0 keeps it -inf
    peak = xp.where(xp.isinf(peak), 0, peak).astype(x.dtype, copy=False)
    total = xp.log(xp.sum(xp.exp(x - peak), axis=axes, keepdims=True)) + peak
    return total if keepdims else xp.squeeze(total, axis=axes)


_REDUCTIONS = {
    "ReduceSum": _sum, "ReduceMean": _mean, "ReduceProd": _prod,
    "ReduceMax": _extreme("max", -math.inf), "ReduceMin": _extreme("min", math.inf),
    "ReduceL1": _l1, "ReduceL2": _l2, "ReduceSumSquare": _sum_square,
    "ReduceLogSum": _log_sum, "ReduceLogSumExp": _log_sum_exp,
}
# The opset from which each reduction takes its axes as an input instead of an attribute.
_AXES_INPUT_SINCE = {op: 13 if op == "ReduceSum" else 18 for op in _REDUCTIONS}


def _apply(xp, reduction, x, axes, keepdims, noop_with_empty_axes):
    axes = tuple(int(a) for a in axes) if axes is not None else ()
    if not axes:
        if noop_with_empty_axes:
            return (x,)
        axes = tuple(range(x.ndim))
    return (reduction(xp, x, axes, bool(keepdims)),)


def _with_axes_attribute(reduction):
    def kernel(xp, x, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        return _apply(xp, reduction, x, axes, keepdims, noop_with_empty_axes)
    return kernel


def _with_axes_input(reduction):
    def kernel(xp, x, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        axes = axes.tolist() if axes is not None else None
        return _apply(xp, reduction, x, axes, keepdims, noop_with_empty_axes)
    return kernel


for _op, _reduction in _REDUCTIONS.items():
    register(_op, _with_axes_attribute(_reduction))
    register(_op, _with_axes_input(_reduction), since=_AXES_INPUT_SINCE[_op])


def _arg_extreme(xp, name, x, axis, keepdims, select_last_index):
    axis = axis % x.ndim if x.ndim else 0
    if select_last_index:
        flipped = getattr(xp, name)(xp.flip(x, axis=axis), axis=axis)
        index = (x.shape[axis] - 1) - flipped
    else:
        index = getattr(xp, name)(x, axis=axis)
    index = index.astype("int64", copy=False)
    return (xp.expand_dims(index, axis) if keepdims else index,)


def arg_max(xp, x, *, axis=0, keepdims=1, select_last_index=0):
    """Index of the largest element along `axis` (ties: first, or last with select_last_index).

    Example:
        >>> import numpy as np
        >>> arg_max(np, np.float32([[1, 5, 5]]), axis=1, select_last_index=1)
        (array([[2]]),)
    """
    return _arg_extreme(xp, "argmax", x, axis, keepdims, select_last_index)


def arg_min(xp, x, *, axis=0, keepdims=1, select_last_index=0):
    """Index of the smallest element along `axis` (ties: first, or last with select_last_index).

    Example:
        >>> import numpy as np
        >>> arg_min(np, np.float32([[3, 1, 2]]), axis=1, keepdims=0)
        (array([1]),)
    """
    return _arg_extreme(xp, "argmin", x, axis, keepdims, select_last_index)


register("ArgMax", arg_max)
register("ArgMin", arg_min)
