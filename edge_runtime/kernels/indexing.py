"""Indexing kernels: Gather*, Scatter*, OneHot, NonZero, TopK, CumSum, Compress, Unique.

Index tensors may hold negative indices (counted from the end of their axis), as ONNX allows.
Scatter kernels return a new array and never write into `data`.

Example:
    >>> import numpy as np
    >>> gather(np, np.float32([10, 20, 30]), np.int64([-1, 0]))
    (array([30., 10.], dtype=float32),)
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


def _wrapped(xp, indices, dim):
    indices = indices.astype("int64", copy=False)
    return xp.where(indices < 0, indices + dim, indices)


@kernel("Gather")
def gather(xp, data, indices, *, axis=0):
    """Pick entries of `data` along `axis` at `indices` (output dims: data's with indices' inside).

    Example:
        >>> import numpy as np
        >>> gather(np, np.arange(6).reshape(2, 3), np.int64([[2]]), axis=1)[0].shape
        (2, 1, 1)
    """
    if xp is not np:
        return (xp.take(data, _wrapped(xp, indices, data.shape[axis]), axis=axis),)
    if indices.ndim == 0:
        # one index (an unrolled RNN's time step): a basic-indexing view, 0.2 us instead of
        # 3 us; out-of-range indices raise IndexError as take does. (Not on cupy: int() of a
        # device array would synchronize, and break CUDA graph capture.)
        axis = axis + data.ndim if axis < 0 else axis
        return (data[(slice(None),) * axis + (int(indices),)],)
    # numpy's take counts negative indices from the end and raises on the rest itself
    return (xp.take(data, indices, axis=axis),)


@kernel("GatherElements")
def gather_elements(xp, data, indices, *, axis=0):
    """out[i][j] = data[indices[i][j]][j] (for axis 0); out has the shape of indices.

    Example:
        >>> import numpy as np
        >>> gather_elements(np, np.float32([[1, 2], [3, 4]]), np.int64([[1, 0]]), axis=0)
        (array([[3., 2.]], dtype=float32),)
    """
    return (xp.take_along_axis(data, _wrapped(xp, indices, data.shape[axis]), axis=axis),)


@kernel("GatherND")
def gather_nd(xp, data, indices, *, batch_dims=0):
    """Gather slices of `data` addressed by the last dim of `indices`, after `batch_dims` dims.

    Example:
        >>> import numpy as np
        >>> gather_nd(np, np.float32([[1, 2], [3, 4]]), np.int64([[1, 0]]))
        (array([3.], dtype=float32),)
    """
    batch_shape = data.shape[:batch_dims]
    depth = indices.shape[-1]
    batch = math.prod(batch_shape)
    flat_data = data.reshape((batch,) + data.shape[batch_dims:])
    flat_indices = indices.reshape(batch, -1, depth)
    rows = xp.arange(batch).reshape(batch, 1)
    picked = flat_data[(rows,) + tuple(flat_indices[..., i] for i in range(depth))]
    out_shape = batch_shape + indices.shape[batch_dims:-1] + data.shape[batch_dims + depth:]
    return (picked.reshape(out_shape),)


_SCATTER_REDUCTIONS = {"add": "add", "mul": "multiply", "max": "maximum", "min": "minimum"}


def _scatter(xp, data, index, updates, reduction, op):
    out = data.copy()
    if reduction == "none":
        out[index] = updates
    elif reduction in _SCATTER_REDUCTIONS:
        getattr(xp, _SCATTER_REDUCTIONS[reduction]).at(out, index, updates)
    else:
        raise KernelError(f"{op}: reduction must be 'none' or one of "
                          f"{sorted(_SCATTER_REDUCTIONS)}, got {reduction!r}")
    return (out,)


@kernel("ScatterND")
def scatter_nd(xp, data, indices, updates, *, reduction="none"):
    """A copy of `data` with the slices addressed by `indices` set to (or combined with) updates.

    Example:
        >>> import numpy as np
        >>> scatter_nd(np, np.zeros(3), np.int64([[2]]), np.ones(1), reduction="add")
        (array([0., 0., 1.]),)
    """
    index = tuple(indices[..., i] for i in range(indices.shape[-1]))
    return _scatter(xp, data, index, updates, reduction, "ScatterND")


@kernel("ScatterElements")
def scatter_elements(xp, data, indices, updates, *, axis=0, reduction="none"):
    """A copy of `data` with data[indices[i][j]][j] (axis 0) set to (or combined with) updates.

    Example:
        >>> import numpy as np
        >>> scatter_elements(np, np.zeros((1, 3)), np.int64([[2]]), np.ones((1, 1)), axis=1)
        (array([[0., 0., 1.]]),)
    """
    axis = axis % data.ndim
    index = tuple(
        _wrapped(xp, indices, data.shape[axis]) if d == axis
        else xp.arange(n).reshape([-1 if j == d else 1 for j in range(indices.ndim)])
        for d, n in enumerate(indices.shape))
    return _scatter(xp, data, index, updates, reduction, "ScatterElements")


@kernel("OneHot")
def one_hot(xp, indices, depth, values, *, axis=-1):
    """values[1] where the new `axis` equals the index, values[0] elsewhere.

    Example:
        >>> import numpy as np
        >>> one_hot(np, np.int64([1, -1]), np.int64(3), np.float32([0, 5]))
        (array([[0., 5., 0.],
               [0., 0., 5.]], dtype=float32),)
    """
    size = int(depth.item())
    hot = _wrapped(xp, indices, size)[..., None] == xp.arange(size)
    hot = xp.moveaxis(hot, -1, axis % hot.ndim)
    return (xp.where(hot, values[1], values[0]),)


@kernel("NonZero")
def non_zero(xp, x):
    """The indices of non-zero elements, one row per dim: shape (rank, count), int64.

    Example:
        >>> import numpy as np
        >>> non_zero(np, np.array([[1, 0], [0, 2]]))
        (array([[0, 1],
               [0, 1]]),)
    """
    return (xp.stack(xp.nonzero(x)).astype("int64", copy=False).reshape(x.ndim, -1),)


@kernel("TopK", since=10)
def top_k(xp, x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002 (ONNX's name)
    """The k largest (or smallest) values along `axis` and their int64 indices.

    Equal values come out in index order, as the ONNX node tests and onnxruntime give them.

    Example:
        >>> import numpy as np
        >>> top_k(np, np.float32([1, 3, 3, 2]), np.int64([2]))
        (array([3., 3.], dtype=float32), array([1, 2]))
    """
    count = int(k.reshape(-1)[0])
    axis = axis % x.ndim
    n = x.shape[axis]
    if not 0 <= count <= n:
        raise KernelError(f"TopK: k={count} is outside [0, {n}], the size of axis {axis} of "
                          f"input shape {x.shape}")
    if largest:
        # stable-sort the reversed axis and reverse back: descending values, ties by index
        order = (n - 1) - xp.flip(xp.argsort(xp.flip(x, axis=axis), axis=axis, kind="stable"),
                                  axis=axis)
    else:
        order = xp.argsort(x, axis=axis, kind="stable")
    index = xp.take(order, xp.arange(count), axis=axis).astype("int64", copy=False)
    return (xp.take_along_axis(x, index, axis=axis), index)


@kernel("CumSum", since=11)
def cum_sum(xp, x, axis, *, exclusive=0, reverse=0):
    """Running sums along `axis`; `exclusive` leaves out the element itself, `reverse` runs back.

    Example:
        >>> import numpy as np
        >>> cum_sum(np, np.float32([1, 2, 3]), np.int64(0), exclusive=1)
        (array([0., 1., 3.], dtype=float32),)
    """
    axis = int(axis.item()) % x.ndim
    if reverse:
        x = xp.flip(x, axis=axis)
    total = xp.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:
        total = total - x
    return (xp.flip(total, axis=axis) if reverse else total,)


@kernel("Compress", since=9)
def compress(xp, x, condition, *, axis=None):
    """The slices of x along `axis` (of the flattened x when absent) where condition is true.

    Example:
        >>> import numpy as np
        >>> compress(np, np.float32([[1, 2], [3, 4]]), np.array([False, True]), axis=0)
        (array([[3., 4.]], dtype=float32),)
    """
    return (xp.compress(condition.astype(bool, copy=False), x, axis=axis),)


@kernel("Unique", since=11)
def unique(xp, x, *, axis=None, sorted=1):  # noqa: A002 (ONNX's name)
    """Unique values (or slices along `axis`), with first indices, inverse indices and counts.

    `sorted=0` keeps the values in order of first occurrence.

    Example:
        >>> import numpy as np
        >>> unique(np, np.float32([2, 1, 2]), sorted=0)[0]
        array([2., 1.], dtype=float32)
    """
    values, first, inverse, counts = xp.unique(x, return_index=True, return_inverse=True,
                                               return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = xp.argsort(first, kind="stable")
        values = xp.take(values, order, axis=0 if axis is None else axis)
        first, counts = first[order], counts[order]
        inverse = xp.argsort(order)[inverse]
    return tuple(a if a is values else a.astype("int64", copy=False)
                 for a in (values, first, inverse, counts))
