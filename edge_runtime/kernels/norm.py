"""BatchNormalization, LayerNormalization, RMSNormalization, InstanceNormalization,
GroupNormalization, LpNormalization.

Statistics of float16/bfloat16 inputs are computed in float32 (ONNX's stash_type=1); float32
and float64 inputs keep their own precision. Outputs have the input's dtype.

Example:
    >>> import numpy as np
    >>> x = np.array([[1., 2., 3., 4.]], np.float32)
    >>> y, mean, inv_std = layer_normalization(np, x, np.ones(4, np.float32))
    >>> mean, y.round(3)
    (array([[2.5]], dtype=float32), array([[-1.342, -0.447,  0.447,  1.342]], dtype=float32))
"""

from __future__ import annotations

import math

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


def _stats_dtype(xp, dtype):
    return xp.float32 if xp.dtype(dtype).itemsize < 4 else dtype


def _per_channel(v, ndim):
    """A (C,) vector shaped to broadcast along dim 1 of an ndim-rank (N, C, ...) array."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def _normalize(xp, x, axis, epsilon):
    """(x - mean) * inv_std over dims axis..rank-1, with mean and inv_std (those dims kept as
    size 1), in x's dtype.

    Row sums are GEMVs against a row of 1/n: 2-3x faster than xp.mean on numpy for the short
    rows of a transformer (20 -> 12 us for (64, 128)); the variance stays two-pass (of x - mean)
    so large means cost no precision.
    """
    kept = x.shape[:axis]
    rows = x.reshape(math.prod(kept), math.prod(x.shape[axis:]))
    weights = xp.full(rows.shape[1], 1.0 / max(rows.shape[1], 1), dtype=x.dtype)
    mean = xp.matmul(rows, weights)[:, None]
    centered = rows - mean
    var = xp.matmul(centered * centered, weights)[:, None]
    var += x.dtype.type(epsilon)
    inv_std = xp.sqrt(var, out=var)
    xp.reciprocal(inv_std, out=inv_std)
    centered *= inv_std
    stats_shape = kept + (1,) * (x.ndim - axis)
    return (centered.reshape(x.shape), mean.reshape(stats_shape), inv_std.reshape(stats_shape))


@kernel("BatchNormalization", wants_n_outputs=True)
def batch_normalization(xp, x, scale, bias, input_mean, input_var, *, epsilon=1e-5,
                        momentum=0.9, training_mode=0, n_outputs=1):
    """ONNX BatchNormalization (opset 9+). training_mode=1 normalizes with the batch statistics
    and also returns the updated running mean and variance (opset 14/15 semantics).

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 3, 4), np.float32); c = np.ones(3, np.float32)
        >>> batch_normalization(np, x, c, c * 0, c * 0, c, epsilon=0.0)[0][0, 0, 0]
        np.float32(1.0)
    """
    channels = x.shape[1]
    for name, v in (("scale", scale), ("B", bias), ("input_mean", input_mean),
                    ("input_var", input_var)):
        if v.shape != (channels,):
            raise KernelError(f"BatchNormalization: {name} has shape {v.shape}, expected "
                              f"({channels},) for input of shape {x.shape}")
    if training_mode:
        axes = (0,) + tuple(range(2, x.ndim))
        mean = xp.mean(x, axis=axes)
        var = xp.var(x, axis=axes)
        running_mean = (input_mean * momentum + mean * (1 - momentum)).astype(x.dtype)
        running_var = (input_var * momentum + var * (1 - momentum)).astype(x.dtype)
    else:
        mean, var = input_mean, input_var
    # one multiply-add pass over x: y = x * a + (bias - mean * a)
    a = scale / xp.sqrt(var + epsilon)
    shift = bias - mean * a
    y = x * _per_channel(a.astype(x.dtype), x.ndim)
    y += _per_channel(shift.astype(x.dtype), x.ndim)
    if training_mode:
        return (y, running_mean, running_var)[:max(n_outputs, 1)]
    return (y,)


@kernel("LayerNormalization")
def layer_normalization(xp, x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    """ONNX LayerNormalization over dims axis..rank-1: (y, mean, inv_std_dev), the statistics
    with the normalized dims kept as size 1.

    Example:
        >>> import numpy as np
        >>> layer_normalization(np, np.ones((2, 3), np.float32), np.ones(3, np.float32))[1].shape
        (2, 1)
    """
    axis = axis + x.ndim if axis < 0 else axis
    stats = _stats_dtype(xp, x.dtype) if stash_type == 1 else x.dtype
    y, mean, inv_std = _normalize(xp, x.astype(stats, copy=False), axis, epsilon)
    y *= scale
    if bias is not None:
        y += bias
    return y.astype(x.dtype, copy=False), mean, inv_std


@kernel("RMSNormalization", since=23)
def rms_normalization(xp, x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    """ONNX RMSNormalization: x / sqrt(mean(x^2) + epsilon) * scale over dims axis..rank-1.

    Example:
        >>> import numpy as np
        >>> rms_normalization(np, np.array([[3., 4.]], np.float32), np.ones(2, np.float32),
        ...                   epsilon=0.0)[0].round(4)
        array([[0.8485, 1.1314]], dtype=float32)
    """
    axis = axis + x.ndim if axis < 0 else axis
    stats = _stats_dtype(xp, x.dtype) if stash_type == 1 else x.dtype
    wide = x.astype(stats, copy=False)
    mean_square = xp.mean(wide * wide, axis=tuple(range(axis, x.ndim)), keepdims=True)
    y = wide / xp.sqrt(mean_square + mean_square.dtype.type(epsilon))
    y *= scale.astype(stats, copy=False)
    return (y.astype(x.dtype, copy=False),)


@kernel("InstanceNormalization")
def instance_normalization(xp, x, scale, b, *, epsilon=1e-5):
    """ONNX InstanceNormalization: per (sample, channel) over the spatial dims.

    Example:
        >>> import numpy as np
        >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
        >>> instance_normalization(np, x, np.ones(1, np.float32), np.zeros(1, np.float32),
        ...                        epsilon=0.0)[0].round(3)
        array([[[-1.342, -0.447,  0.447,  1.342]]], dtype=float32)
    """
    stats = _stats_dtype(xp, x.dtype)
    y, _, _ = _normalize(xp, x.astype(stats, copy=False), 2, epsilon)
    y *= _per_channel(scale.astype(stats), x.ndim)
    y += _per_channel(b.astype(stats), x.ndim)
    return (y.astype(x.dtype, copy=False),)


def _group_normalize(xp, x, num_groups, epsilon, stash_type):
    n, c = x.shape[:2]
    if c % num_groups:
        raise KernelError(f"GroupNormalization: channels {c} are not divisible by num_groups "
                          f"{num_groups}")
    stats = _stats_dtype(xp, x.dtype) if stash_type == 1 else x.dtype
    grouped = x.astype(stats, copy=False).reshape(n, num_groups, -1)
    y, _, _ = _normalize(xp, grouped, 2, epsilon)
    return y.reshape(x.shape)


@kernel("GroupNormalization", since=18)
def group_normalization_18(xp, x, scale, bias, *, epsilon=1e-5, num_groups):
    """ONNX GroupNormalization-18: scale and bias have one entry per group.

    Example:
        >>> import numpy as np
        >>> x = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
        >>> group_normalization_18(np, x, np.ones(2, np.float32), np.zeros(2, np.float32),
        ...                        epsilon=0.0, num_groups=2)[0].ravel()
        array([-1.,  1., -1.,  1.], dtype=float32)
    """
    per_channel = x.shape[1] // num_groups
    return group_normalization(xp, x, xp.repeat(scale, per_channel), xp.repeat(bias, per_channel),
                               epsilon=epsilon, num_groups=num_groups)


@kernel("GroupNormalization", since=21)
def group_normalization(xp, x, scale, bias, *, epsilon=1e-5, num_groups, stash_type=1):
    """ONNX GroupNormalization-21: statistics per group, scale and bias per channel.

    Example:
        >>> import numpy as np
        >>> x = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
        >>> group_normalization(np, x, np.ones(4, np.float32), np.zeros(4, np.float32),
        ...                     epsilon=0.0, num_groups=2)[0].ravel()
        array([-1.,  1., -1.,  1.], dtype=float32)
    """
    y = _group_normalize(xp, x, num_groups, epsilon, stash_type)
    y *= _per_channel(scale.astype(y.dtype), x.ndim)
    y += _per_channel(bias.astype(y.dtype), x.ndim)
    return (y.astype(x.dtype, copy=False),)


@kernel("LpNormalization")
def lp_normalization(xp, x, *, axis=-1, p=2):
    """ONNX LpNormalization: x divided by its L1 or L2 norm along `axis` (zero norms give 0).

    Example:
        >>> import numpy as np
        >>> lp_normalization(np, np.array([[3., 4.]], np.float32))[0]
        array([[0.6, 0.8]], dtype=float32)
    """
    if p not in (1, 2):
        raise KernelError(f"LpNormalization: p must be 1 or 2, got {p}")
    norm = (xp.sum(xp.abs(x), axis=axis, keepdims=True) if p == 1
            else xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True)))
    safe = xp.where(norm == 0, xp.ones((), dtype=norm.dtype), norm)
    return (xp.where(norm == 0, xp.zeros((), dtype=x.dtype), x / safe),)
