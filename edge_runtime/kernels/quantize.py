"""QuantizeLinear and DequantizeLinear: per-tensor, per-axis and blocked, integer types.

Quantize: q = saturate(round_half_to_even(x / scale) + zero_point); dequantize:
x = (q - zero_point) * scale. A 1-D scale runs along `axis`; with `block_size` > 0 the scale has
x's rank and each of its entries covers `block_size` consecutive elements along `axis`.

Example:
    >>> import numpy as np
    >>> quantize_linear(np, np.float32([-1, 0.5, 300]), np.float32(2), np.uint8(128))
    (array([128, 128, 255], dtype=uint8),)
"""

from __future__ import annotations

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.elementwise import numpy_dtype
from modelkit.edge_runtime.kernels.registry import kernel


def _along_axis(xp, parameter, x, axis, block_size, op):
    """`parameter` (scale or zero point) shaped to broadcast against x."""
    if parameter.ndim == 0 or (parameter.size == 1 and not block_size):
        return parameter.reshape(())
    axis = axis % x.ndim
    if block_size:
        if parameter.ndim != x.ndim:
            raise KernelError(f"{op}: blocked scale must have rank {x.ndim}, "
                              f"got shape {parameter.shape}")
        return xp.repeat(parameter, block_size, axis=axis)[
            tuple(slice(0, x.shape[axis]) if d == axis else slice(None) for d in range(x.ndim))]
    if parameter.ndim != 1 or parameter.shape[0] != x.shape[axis]:
        raise KernelError(f"{op}: per-axis scale/zero point must have shape ({x.shape[axis]},) "
                          f"for axis {axis} of input shape {x.shape}, got {parameter.shape}")
    return parameter.reshape([-1 if d == axis else 1 for d in range(x.ndim)])


def _target_dtype(zero_point, output_dtype, default):
    if output_dtype:
        return numpy_dtype(output_dtype)
    return zero_point.dtype if zero_point is not None else np.dtype(default)


@kernel("QuantizeLinear", since=10)
def quantize_linear(xp, x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0,
                    output_dtype=0):
    """Quantize float x to uint8 (default), int8, uint16, int16 or int32, saturating.

    `saturate` only concerns float8 outputs, which the runtime does not support.

    Example:
        >>> quantize_linear(np, np.float32([2.5, 3.5, -500]), np.float32(1), np.int8(0))
        (array([   2,    4, -128], dtype=int8),)
    """
    dtype = _target_dtype(y_zero_point, output_dtype, "uint8")
    if dtype.kind not in "iu":
        raise KernelError(f"QuantizeLinear: output type {dtype} is not supported; "
                          "expected an integer type")
    scale = _along_axis(xp, y_scale, x, axis, block_size, "QuantizeLinear")
    # one scratch array, updated in place (an explicit `out` also keeps 0-d results arrays)
    q = xp.divide(x, scale, out=xp.empty(x.shape, dtype=xp.result_type(x, scale)))
    xp.rint(q, out=q)
    if y_zero_point is not None:
        zero = _along_axis(xp, y_zero_point, x, axis, block_size, "QuantizeLinear")
        q += zero.astype(q.dtype)
    limits = np.iinfo(dtype)
    return (xp.clip(q, limits.min, limits.max, out=q).astype(dtype),)


@kernel("DequantizeLinear", since=10)
def dequantize_linear(xp, x, x_scale, x_zero_point=None, *, axis=1, block_size=0,
                      output_dtype=0):
    """(x - zero_point) * scale, in the scale's float type (or `output_dtype`).

    Example:
        >>> dequantize_linear(np, np.uint8([0, 130]), np.float32(0.5), np.uint8(128))
        (array([-64.,   1.], dtype=float32),)
    """
    dtype = numpy_dtype(output_dtype) if output_dtype else x_scale.dtype
    scale = _along_axis(xp, x_scale, x, axis, block_size, "DequantizeLinear")
    values = x.astype(dtype)
    if x_zero_point is not None:
        zero = _along_axis(xp, x_zero_point, x, axis, block_size, "DequantizeLinear")
        values = values - zero.astype(dtype)
    return ((values * scale).astype(dtype, copy=False),)


@kernel("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(xp, x):
    """Quantise float x to uint8 with the scale and zero point its own range (widened to hold 0)
    gives: y = saturate(round(x / scale) + zero_point), rounding half to even.

    Example:
        >>> import numpy as np
        >>> y, scale, zero_point = dynamic_quantize_linear(np, np.float32([-1, 0, 2, 3]))
        >>> y, zero_point
        (array([  0,  64, 191, 255], dtype=uint8), array(64, dtype=uint8))
        >>> scale  # 4 / 255
        array(0.01568628, dtype=float32)
    """
    f32 = xp.float32
    high = xp.maximum(x.max(), 0).astype(f32) if x.size else f32(0)
    low = xp.minimum(x.min(), 0).astype(f32) if x.size else f32(0)
    span = xp.where(high == low, f32(1), high - low)
    scale = (span / f32(255)).astype(f32)
    zero_point = xp.rint(xp.clip(f32(0) - low / scale, 0, 255))
    y = xp.clip(xp.rint(x / scale) + zero_point, 0, 255)
    return (y.astype(xp.uint8), xp.asarray(scale).astype(x.dtype),
            xp.asarray(zero_point).astype(xp.uint8))
