"""Resize (opsets 10-19) and the deprecated Upsample.

Resizing is separable: each resized axis is done in turn. Per axis, the output positions are
mapped to source coordinates (`coordinate_transformation_mode`), then nearest mode gathers one
source index per output position, while linear and cubic modes (antialiased or not) build a
small dense (out, in) interpolation matrix, applied with one tensordot. The index and weight
arithmetic runs in numpy on the host (it is per axis, not per element); only the data moves
through `xp`.

Example:
    >>> import numpy as np
    >>> x = np.array([[[[1., 2.], [3., 4.]]]], np.float32)
    >>> resize(np, x, None, np.array([1, 1, 2, 2], np.float32), mode="nearest")[0][0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


def _linear_kernel(t, a):
    return np.clip(1 - np.abs(t), 0, 1)


def _cubic_kernel(t, a):
    """Keys' cubic convolution kernel with coefficient a (-0.75 in ONNX, -0.5 in PIL)."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


# mode -> (kernel(t, a), support radius)
INTERPOLATIONS = {"linear": (_linear_kernel, 1), "cubic": (_cubic_kernel, 2)}

NEAREST_MODES = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


def _source_coordinates(mode, out_size, in_size, scale, roi):
    """Source coordinate of each output position along one axis (float64), per ONNX Resize.

    Like the ONNX reference, align_corners and tf_crop_and_resize divide by the unrounded
    output extent scale * in_size, not by the integer output size.
    """
    y = np.arange(out_size, dtype=np.float64)
    extent = scale * in_size
    if mode == "align_corners":
        return y * ((in_size - 1) / (extent - 1)) if extent != 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if extent != 1:
            return start * (in_size - 1) + y * ((end - start) * (in_size - 1) / (extent - 1))
        return np.full(out_size, (start + end) * (in_size - 1) / 2)
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if extent != 1 else np.full(out_size, -0.5)
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / extent)
        return offset + (y + 0.5) / scale - 0.5
    raise KernelError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _interpolation_matrix(coords, in_size, scale, mode, cubic_coeff_a, antialias,
                          exclude_outside):
    """(out, in) weights of linear/cubic interpolation at `coords`; edge taps are clamped."""
    kernel_fn, radius = INTERPOLATIONS[mode]
    # antialiasing widens the kernel by 1/scale when shrinking, as a low-pass filter
    stretch = min(scale, 1.0) if antialias else 1.0
    first = math.floor(-radius / stretch) + 1
    offsets = np.arange(first, 1 - first + 1)
    base = np.floor(coords)
    taps = base[:, None] + offsets[None, :]
    weights = kernel_fn((offsets[None, :] - (coords - base)[:, None]) * stretch, cubic_coeff_a)
    if exclude_outside:
        weights = np.where((taps < 0) | (taps > in_size - 1), 0.0, weights)
    total = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(total == 0, 1.0, total)
    matrix = np.zeros((len(coords), in_size))
    rows = np.repeat(np.arange(len(coords)), len(offsets))
    np.add.at(matrix, (rows, np.clip(taps, 0, in_size - 1).astype(np.int64).ravel()),
              weights.ravel())
    return matrix


def _resize_axis(xp, y, axis, out_size, scale, roi, attrs):
    in_size = y.shape[axis]
    coords = _source_coordinates(attrs["coordinate_transformation_mode"], out_size, in_size,
                                 scale, roi)
    if attrs["mode"] == "nearest":
        rounding = NEAREST_MODES.get(attrs["nearest_mode"])
        if rounding is None:
            raise KernelError(f"Resize: unknown nearest_mode {attrs['nearest_mode']!r}; known: "
                              f"{sorted(NEAREST_MODES)}")
        # NOTE: rounding the coordinate to float32 first picks the pixel onnxruntime picks
        # when float64 lands just below an integer (3 / 0.6f = 4.9999998 -> 5)
        index = np.clip(rounding(coords.astype(np.float32)), 0, in_size - 1).astype(np.int64)
        result = xp.take(y, xp.asarray(index), axis=axis)
    elif attrs["mode"] in INTERPOLATIONS:
        matrix = _interpolation_matrix(coords, in_size, scale, attrs["mode"],
                                       attrs["cubic_coeff_a"], attrs["antialias"],
                                       attrs["exclude_outside"])
        product = xp.tensordot(y, xp.asarray(matrix, dtype=y.dtype), axes=([axis], [1]))
        result = xp.moveaxis(product, -1, axis)
    else:
        raise KernelError(f"Resize: unknown mode {attrs['mode']!r}; known: nearest, linear, "
                          "cubic")
    if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > in_size - 1)
        if outside.any():
            mask = xp.asarray(outside.reshape((-1,) + (1,) * (y.ndim - axis - 1)))
            result = xp.where(mask, xp.asarray(attrs["extrapolation_value"], dtype=y.dtype),
                              result)
    return result


def _host(xp, v):
    """A small parameter tensor (scales, sizes, roi) as a host numpy array, or None if empty."""
    if v is None:
        return None
    v = np.asarray(v.get() if hasattr(v, "get") else v)
    return v if v.size else None


def _output_geometry(x_shape, axes, scales, sizes, policy):
    """(scale per axis, output size per axis) for the resized axes, per ONNX Resize-18."""
    in_sizes = [x_shape[a] for a in axes]
    if scales is not None:
        if len(scales) != len(axes):
            raise KernelError(f"Resize: scales {scales.tolist()} must have one entry per "
                              f"resized axis {list(axes)}")
        scales = [float(s) for s in scales]
        return scales, [int(math.floor(n * s)) for n, s in zip(in_sizes, scales)]
    if sizes is None:
        raise KernelError("Resize: exactly one of scales and sizes must be given, got neither")
    if len(sizes) != len(axes):
        raise KernelError(f"Resize: sizes {sizes.tolist()} must have one entry per resized "
                          f"axis {list(axes)}")
    sizes = [int(s) for s in sizes]
    ratios = [s / n for s, n in zip(sizes, in_sizes)]
    if policy == "stretch":
        return ratios, sizes
    if policy not in ("not_larger", "not_smaller"):
        raise KernelError(f"Resize: unknown keep_aspect_ratio_policy {policy!r}")
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    return [scale] * len(axes), [int(scale * n + 0.5) for n in in_sizes]


def _cast_back(xp, y, dtype):
    if xp.issubdtype(dtype, xp.integer):
        info = xp.iinfo(dtype)
        return xp.clip(xp.rint(y), info.min, info.max).astype(dtype)
    return y.astype(dtype, copy=False)


@kernel("Resize", since=11)
def resize(xp, x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor"):
    """ONNX Resize-11..19: nearest / linear / cubic over any axes, from scales or sizes.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1., 3.]], np.float32)
        >>> resize(np, x, None, None, np.array([1, 4]), mode="linear")[0]
        array([[1. , 1.5, 2.5, 3. ]], dtype=float32)
    """
    rank = x.ndim
    axes = [a + rank if a < 0 else a for a in axes] if axes is not None else list(range(rank))
    scales, sizes, roi = _host(xp, scales), _host(xp, sizes), _host(xp, roi)
    axis_scales, out_sizes = _output_geometry(x.shape, axes, scales, sizes,
                                              keep_aspect_ratio_policy)
    if roi is not None and len(roi) == 2 * len(axes):
        rois = list(zip(roi[:len(axes)], roi[len(axes):]))
    elif roi is not None and len(roi) == 2 * rank:
        rois = [(roi[a], roi[a + rank]) for a in axes]
    else:
        rois = [(0.0, 1.0)] * len(axes)
    attrs = dict(mode=mode, nearest_mode=nearest_mode, antialias=antialias,
                 coordinate_transformation_mode=coordinate_transformation_mode,
                 cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                 extrapolation_value=extrapolation_value)
    compute_dtype = x.dtype if x.dtype in (xp.float32, xp.float64) else xp.float32
    y = x.astype(compute_dtype, copy=False)
    for axis, scale, out_size, axis_roi in zip(axes, axis_scales, out_sizes, rois):
        trivial_roi = axis_roi == (0.0, 1.0) or coordinate_transformation_mode != \
            "tf_crop_and_resize"
        if out_size == y.shape[axis] and scale == 1.0 and trivial_roi:
            continue
        y = _resize_axis(xp, y, axis, out_size, scale, axis_roi, attrs)
    return (_cast_back(xp, xp.ascontiguousarray(y), x.dtype),)


def _asymmetric(xp, x, scales, mode):
    # NOTE: nearest rounds down when enlarging and up when shrinking: onnxruntime's rule for
    # Resize-10 and Upsample, which predate nearest_mode
    shrinking = any(s < 1 for s in scales)
    return resize(xp, x, None, scales, mode=mode, coordinate_transformation_mode="asymmetric",
                  nearest_mode="ceil" if shrinking else "floor")


@kernel("Resize", since=10)
def resize_10(xp, x, scales, *, mode="nearest"):
    """ONNX Resize-10: scales only, asymmetric coordinates.

    Example:
        >>> import numpy as np
        >>> resize_10(np, np.array([[1., 2.]], np.float32), np.array([1., 2.], np.float32))[0]
        array([[1., 1., 2., 2.]], dtype=float32)
    """
    return _asymmetric(xp, x, _host(xp, scales), mode)


@kernel("Upsample", since=9)
def upsample(xp, x, scales, *, mode="nearest"):
    """ONNX Upsample-9 (deprecated): the same as Resize-10.

    Example:
        >>> import numpy as np
        >>> upsample(np, np.array([[1., 2.]], np.float32), np.array([2., 1.], np.float32))[0]
        array([[1., 2.],
               [1., 2.]], dtype=float32)
    """
    return _asymmetric(xp, x, _host(xp, scales), mode)


@kernel("Upsample", since=7)
def upsample_7(xp, x, *, scales, mode="nearest"):
    """ONNX Upsample-7 (deprecated): scales as an attribute.

    Example:
        >>> import numpy as np
        >>> upsample_7(np, np.array([[1., 2.]], np.float32), scales=[1.0, 2.0])[0]
        array([[1., 1., 2., 2.]], dtype=float32)
    """
    return _asymmetric(xp, x, np.asarray(scales, dtype=np.float64), mode)
