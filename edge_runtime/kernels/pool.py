"""MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, and the pooling gradients.

Every pool is a short loop over kernel taps of whole-array operations on strided slices of the
padded input (see `spatial`), never a loop over output positions. MaxPool pads with -inf (or the
dtype's minimum) so padding never wins; AveragePool divides by a per-position count computed
the same way from a ones image, which handles count_include_pad and ceil_mode's partial windows.

Example:
    >>> import numpy as np
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> max_pool(np, x, kernel_shape=[2, 2], strides=[2, 2])[0][0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel
from modelkit.edge_runtime.shape_cache import ShapeCache
from modelkit.edge_runtime.kernels.spatial import (
    Window, crop_spatial, pad_spatial, size_of, tap_slices, taps, window,
)

_ALL = (slice(None), slice(None))


def _pool_window(op, x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    if kernel_shape is None or len(kernel_shape) != x.ndim - 2:
        raise KernelError(f"{op}: kernel_shape {kernel_shape} must have one entry per spatial "
                          f"dim of the input of shape {x.shape}")
    return window(x.shape[2:], kernel_shape, strides=strides, dilations=dilations, pads=pads,
                  auto_pad=auto_pad, ceil_mode=ceil_mode, op=op)


def _lowest(xp, dtype):
    if xp.issubdtype(dtype, xp.floating):
        return -xp.inf
    return xp.iinfo(dtype).min


def _separable(xp, padded, win: Window, combine):
    """Reduce every window of `win` with `combine` (maximum or add), one dim at a time.

    A box window is separable for max and sum, so this takes sum(kernel) whole-array passes
    instead of prod(kernel).
    """
    result = padded
    for dim in range(len(win.kernel)):
        axis = 2 + dim
        stride, dilation, size = win.strides[dim], win.dilations[dim], win.out[dim]
        slices = []
        for tap in range(win.kernel[dim]):
            index = [slice(None)] * result.ndim
            start = tap * dilation
            index[axis] = slice(start, start + (size - 1) * stride + 1, stride)
            slices.append(result[tuple(index)])
        acc = combine(slices[0], slices[1]) if len(slices) > 1 else slices[0].copy()
        for sliced in slices[2:]:
            combine(acc, sliced, out=acc)
        result = acc
    return result


class _MaxPass(NamedTuple):
    """The max over the window taps along one spatial dim, as index tuples: the two taps that
    cover every output position (`pair`, or None: start from the dtype's lowest value in an
    array of `shape`), then `updates` of (output part, input part) for the other taps."""

    pair: tuple | None
    shape: tuple
    updates: tuple


@functools.lru_cache(maxsize=1024)
def _max_pass(shape: tuple, axis: int, win: Window, dim: int) -> _MaxPass:
    """The `_MaxPass` of spatial dim `dim` (array axis `axis`) over an input of `shape`, reading
    the unpadded input: each tap updates only the output positions whose input index lies
    inside it, so padding never wins without being materialised."""
    n, size = shape[axis], win.out[dim]
    stride, dilation, begin = win.strides[dim], win.dilations[dim], win.begin[dim]
    ranges = []
    for tap in range(win.kernel[dim]):
        shift = tap * dilation - begin  # input index of output position 0
        lo = max(0, -(shift // stride) if shift < 0 else 0)
        hi = min(size, (n - 1 - shift) // stride + 1) if n - 1 >= shift else 0
        if hi > lo:
            ranges.append((lo, hi, shift))

    def along(part):
        return (slice(None),) * axis + (part,)

    def read(lo, hi, shift):
        return along(slice(lo * stride + shift, (hi - 1) * stride + shift + 1, stride))

    full = [r for r in ranges if r[0] == 0 and r[1] == size]
    pair = None
    if len(full) >= 2:
        pair = (read(*full[0]), read(*full[1]))
        ranges = [r for r in ranges if r not in full[:2]]
    out_shape = shape[:axis] + (size,) + shape[axis + 1:]
    updates = tuple((along(slice(lo, hi)), read(lo, hi, shift)) for lo, hi, shift in ranges)
    return _MaxPass(pair, out_shape, updates)


def _apply_max_pass(xp, x, p: _MaxPass):
    if p.pair is not None:
        result = xp.maximum(x[p.pair[0]], x[p.pair[1]])
    else:
        result = xp.full(p.shape, _lowest(xp, x.dtype), dtype=x.dtype)
    for target, source in p.updates:
        part = result[target]
        xp.maximum(part, x[source], out=part)
    return result


def _max_passes(shape: tuple, win: Window) -> tuple:
    passes = []
    for dim in range(len(win.kernel)):
        passes.append(_max_pass(shape, 2 + dim, win, dim))
        shape = passes[-1].shape
    return tuple(passes)


def _separable_max(xp, x, passes: tuple):
    """MaxPool without indices by `_max_passes`: one dim at a time, first spatial dim first so
    that the pass over the full-size input reads whole contiguous rows."""
    result = x
    for p in passes:
        result = _apply_max_pass(xp, result, p)
    return result if result is not x else result.copy()


def prepare_max_pool(xp, attrs: dict, constants: list):
    """A MaxPool kernel (without indices) for one node that works out its passes once per input
    shape, or None for a node with an indices output (`constants`, the node's constant inputs,
    are not needed).

    Example:
        >>> import numpy as np
        >>> pool = prepare_max_pool(np, {"kernel_shape": [2], "strides": [2], "n_outputs": 1}, [None])
        >>> pool(np.array([[[1., 3., 2., 0.]]], np.float32))[0]
        array([[[3., 2.]]], dtype=float32)
    """
    if attrs.get("n_outputs", 2) != 1:
        return None
    known = ShapeCache()

    def max_passes(x):
        win = _pool_window("MaxPool", x, attrs.get("kernel_shape"), attrs.get("strides"),
                           attrs.get("dilations"), attrs.get("pads"),
                           attrs.get("auto_pad", "NOTSET"), attrs.get("ceil_mode", 0))
        return _max_passes(x.shape, win)

    def prepared_max_pool(x):
        return (_separable_max(xp, x, known.computed(x.shape, lambda: max_passes(x))),)
    return prepared_max_pool


def _first_argmax(xp, x, win: Window):
    """Max over each window and the tap number of its first maximum."""
    padded = pad_spatial(xp, x, win, _lowest(xp, x.dtype))
    y = arg = None
    for i, tap in enumerate(taps(win)):
        sliced = padded[_ALL + tap_slices(win, tap)]
        if y is None:
            y = sliced.copy()
            arg = xp.zeros(y.shape, dtype=xp.int64)
            continue
        better = sliced > y
        y = xp.where(better, sliced, y)
        arg = xp.where(better, i, arg)
    return y, arg


def _flat_indices(xp, x_shape, win: Window, arg, storage_order):
    """ONNX MaxPool indices: flat positions in x, column-major within a plane if storage_order."""
    spatial = x_shape[2:]
    rank = len(spatial)
    kernel_coords = xp.asarray(list(taps(win)), dtype=xp.int64).reshape(-1, rank)
    coords = []
    for dim in range(rank):
        out_pos = xp.arange(win.out[dim], dtype=xp.int64).reshape(
            (-1,) + (1,) * (rank - 1 - dim))
        coords.append(out_pos * win.strides[dim] - win.begin[dim]
                      + kernel_coords[:, dim][arg] * win.dilations[dim])
    order = range(rank) if not storage_order else reversed(range(rank))
    flat = xp.zeros(arg.shape, dtype=xp.int64)
    for dim in order:
        flat = flat * spatial[dim] + coords[dim]
    planes = xp.arange(x_shape[0] * x_shape[1], dtype=xp.int64).reshape(
        (x_shape[0], x_shape[1]) + (1,) * rank)
    return flat + planes * size_of(spatial)


@kernel("MaxPool", wants_n_outputs=True)
def max_pool(xp, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None,
             pads=None, storage_order=0, strides=None, n_outputs=2):
    """ONNX MaxPool: (y,) or (y, indices) when n_outputs == 2 (indices as ONNX defines them).

    Example:
        >>> import numpy as np
        >>> x = np.array([[[1., 3., 2., 0.]]], np.float32)
        >>> max_pool(np, x, kernel_shape=[2], strides=[2])[1]
        array([[[1, 2]]])
    """
    win = _pool_window("MaxPool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    if n_outputs == 1:
        return (_separable_max(xp, x, _max_passes(x.shape, win)),)
    y, arg = _first_argmax(xp, x, win)
    return y, _flat_indices(xp, x.shape, win, arg, storage_order)


def max_pool_grad(xp, dy, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None,
                  kernel_shape=None, pads=None, storage_order=0, strides=None, n_outputs=2):
    """Gradient of `max_pool` w.r.t. x: dy goes to each window's first maximum (as PyTorch).

    Example:
        >>> import numpy as np
        >>> x = np.array([[[1., 3., 2., 0.]]], np.float32)
        >>> max_pool_grad(np, np.ones((1, 1, 2), np.float32), x, kernel_shape=[2], strides=[2])
        array([[[0., 1., 1., 0.]]], dtype=float32)
    """
    win = _pool_window("MaxPool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    y = _separable_max(xp, x, _max_passes(x.shape, win))
    padded = pad_spatial(xp, x, win, _lowest(xp, x.dtype))
    # windows that tile the input exactly write every cell once: no zero fill, no accumulation
    tiles = (win.padded == x.shape[2:] and win.strides == win.kernel
             and all(o * s == n for o, s, n in zip(win.out, win.strides, x.shape[2:])))
    image = (xp.empty if tiles else xp.zeros)(x.shape[:2] + win.padded, dtype=dy.dtype)
    found = hit = None
    for tap in taps(win):
        spatial = _ALL + tap_slices(win, tap)
        hit = xp.equal(padded[spatial], y, out=hit)
        if found is None:
            found = hit.copy()
        else:
            xp.greater(hit, found, out=hit)  # a maximum, and no earlier tap took this window
            found |= hit
        if tiles:
            xp.multiply(dy, hit, out=image[spatial])
        else:
            image[spatial] += dy * hit
    return xp.ascontiguousarray(crop_spatial(image, win, x.shape[2:]))


def _window_sums(xp, padded, win: Window):
    return _separable(xp, padded, win, xp.add)


def _average_divisor(xp, in_shape, win: Window, count_include_pad, dtype):
    """Per output position, how many elements its window averages (shape (1, 1, *out))."""
    ones = xp.ones((1, 1) + tuple(in_shape), dtype=dtype)
    if count_include_pad:
        # padding counts, the extra cells of a ceil_mode window beyond the padding do not
        ones = xp.pad(ones, [(0, 0), (0, 0)] + list(zip(win.begin, win.end)),
                      constant_values=1)
        shifted = win._replace(begin=(0,) * len(in_shape), end=(0,) * len(in_shape))
        return _window_sums(xp, pad_spatial(xp, ones, shifted), shifted)
    return _window_sums(xp, pad_spatial(xp, ones, win), win)


@kernel("AveragePool")
def average_pool(xp, x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    """ONNX AveragePool.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[1., 3., 2., 0.]]], np.float32)
        >>> average_pool(np, x, kernel_shape=[2], pads=[1, 0])[0]
        array([[[1. , 2. , 2.5, 1. ]]], dtype=float32)
    """
    win = _pool_window("AveragePool", x, kernel_shape, strides, dilations, pads, auto_pad,
                       ceil_mode)
    total = _window_sums(xp, pad_spatial(xp, x, win), win)
    if win.padded == x.shape[2:]:
        # no padding anywhere: every window holds the whole kernel
        total *= total.dtype.type(1.0 / size_of(win.kernel))
    else:
        total /= _average_divisor(xp, x.shape[2:], win, count_include_pad, x.dtype)
    return (total,)


def prepare_average_pool(xp, attrs: dict, constants: list):
    """An AveragePool kernel for one node that works out its window and divisor once per input
    shape (`constants` are not needed); a window that covers the whole input without padding
    (a global average written as AveragePool) is one sum per channel.

    Example:
        >>> import numpy as np
        >>> pool = prepare_average_pool(np, {"kernel_shape": [2, 2]}, [None])
        >>> pool(np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2))[0]
        array([[[[1.5]]]], dtype=float32)
    """
    known = ShapeCache()

    def prepared_average_pool(x):
        win, whole, divisor = known.computed(x.shape, lambda: _average_geometry(xp, x, attrs))
        if whole:
            # NOTE: a sum over the rows of a 2-D view is 2x faster than mean over the axes
            rows = x.reshape(x.shape[0] * x.shape[1], -1)
            total = xp.multiply(rows.sum(axis=1), x.dtype.type(1.0 / rows.shape[1]))
            return (total.reshape(x.shape[:2] + (1,) * (x.ndim - 2)),)
        total = _window_sums(xp, pad_spatial(xp, x, win), win)
        if divisor is None:
            total *= total.dtype.type(1.0 / size_of(win.kernel))
        else:
            total /= divisor
        return (total,)
    return prepared_average_pool


def _average_geometry(xp, x, attrs):
    """(window, whether it is one window over the whole unpadded input, divisor or None)."""
    win = _pool_window("AveragePool", x, attrs.get("kernel_shape"), attrs.get("strides"),
                       attrs.get("dilations"), attrs.get("pads"), attrs.get("auto_pad", "NOTSET"),
                       attrs.get("ceil_mode", 0))
    unpadded = win.padded == x.shape[2:]
    whole = unpadded and win.kernel == x.shape[2:] and all(d == 1 for d in win.dilations)
    divisor = None if unpadded else _average_divisor(
        xp, x.shape[2:], win, attrs.get("count_include_pad", 0), x.dtype)
    return win, whole, divisor


def average_pool_grad(xp, dy, x_shape, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0,
                      dilations=None, kernel_shape=None, pads=None, strides=None):
    """Gradient of `average_pool` w.r.t. its input of shape `x_shape`.

    Example:
        >>> import numpy as np
        >>> average_pool_grad(np, np.ones((1, 1, 2), np.float32), (1, 1, 4), kernel_shape=[2],
        ...                   strides=[2])
        array([[[0.5, 0.5, 0.5, 0.5]]], dtype=float32)
    """
    x_shape = tuple(x_shape)
    if kernel_shape is None or len(kernel_shape) != len(x_shape) - 2:
        raise KernelError(f"AveragePool: kernel_shape {kernel_shape} must have one entry per "
                          f"spatial dim of the input of shape {x_shape}")
    win = window(x_shape[2:], kernel_shape, strides=strides, dilations=dilations, pads=pads,
                 auto_pad=auto_pad, ceil_mode=ceil_mode, op="AveragePool")
    share = dy / _average_divisor(xp, x_shape[2:], win, count_include_pad, dy.dtype)
    image = xp.zeros(x_shape[:2] + win.padded, dtype=dy.dtype)
    for tap in taps(win):
        image[_ALL + tap_slices(win, tap)] += share
    return xp.ascontiguousarray(crop_spatial(image, win, x_shape[2:]))


@kernel("LpPool")
def lp_pool(xp, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2,
            pads=None, strides=None):
    """ONNX LpPool: (sum over the window of |x|^p)^(1/p), padding counting as zeros.

    Example:
        >>> import numpy as np
        >>> lp_pool(np, np.array([[[3., 4.]]], np.float32), kernel_shape=[2])[0]
        array([[[5.]]], dtype=float32)
    """
    win = _pool_window("LpPool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    powered = xp.abs(x) ** p
    total = _window_sums(xp, pad_spatial(xp, powered, win), win)
    return (total ** (1.0 / p),)


@kernel("GlobalAveragePool")
def global_average_pool(xp, x):
    """ONNX GlobalAveragePool: mean over all spatial dims, kept as size 1.

    Example:
        >>> import numpy as np
        >>> global_average_pool(np, np.ones((1, 2, 3, 3), np.float32))[0].shape
        (1, 2, 1, 1)
    """
    return (xp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype),)


@kernel("GlobalMaxPool")
def global_max_pool(xp, x):
    """ONNX GlobalMaxPool: max over all spatial dims, kept as size 1.

    Example:
        >>> import numpy as np
        >>> global_max_pool(np, np.arange(4.0).reshape(1, 1, 2, 2))[0]
        array([[[[3.]]]])
    """
    return (xp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True),)


@kernel("GlobalLpPool")
def global_lp_pool(xp, x, *, p=2):
    """ONNX GlobalLpPool: the p-norm over all spatial dims, kept as size 1.

    Example:
        >>> import numpy as np
        >>> global_lp_pool(np, np.array([[[3., 4.]]], np.float32))[0]
        array([[[5.]]], dtype=float32)
    """
    axes = tuple(range(2, x.ndim))
    return (xp.sum(xp.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p),)


@kernel("MaxUnpool", since=9)
def max_unpool(xp, x, indices, output_shape=None, *, kernel_shape=None, pads=None,
               strides=None):
    """ONNX MaxUnpool: zeros with x's values put back at MaxPool's flat `indices`.

    Without `output_shape` the output has the spatial size a MaxPool with these attributes
    would have been applied to: (in - 1) * stride + kernel - pads.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[5., 7.]]], np.float32)
        >>> max_unpool(np, x, np.array([[[1, 2]]]), kernel_shape=[2], strides=[2])[0]
        array([[[0., 5., 7., 0.]]], dtype=float32)
    """
    rank = x.ndim - 2
    if kernel_shape is None or len(kernel_shape) != rank:
        raise KernelError(f"MaxUnpool: kernel_shape {kernel_shape} must have one entry per "
                          f"spatial dim of the input of shape {x.shape}")
    strides = strides or (1,) * rank
    pads = pads or (0,) * (2 * rank)
    if output_shape is not None:
        shape = tuple(int(n) for n in (output_shape.get() if hasattr(output_shape, "get")
                                       else output_shape))
    else:
        shape = x.shape[:2] + tuple((n - 1) * s - pads[d] - pads[rank + d] + k for d, (n, s, k)
                                    in enumerate(zip(x.shape[2:], strides, kernel_shape)))
    y = xp.zeros(size_of(shape), dtype=x.dtype)
    y[indices.reshape(-1)] = x.reshape(-1)
    return (y.reshape(shape),)
