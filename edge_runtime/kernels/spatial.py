"""Sliding-window geometry shared by convolution and pooling kernels.

A `Window` holds, per spatial dim, the kernel extent, stride, dilation, the padding before and
after the input, and the number of window positions (the output size). Conv and pooling kernels
compute one `Window` per call and then work on strided slices: `tap_slices` gives, for one kernel
tap (one position inside the kernel), the slice of the padded input that every output position
reads through that tap, so a convolution or a pool is a short loop over taps of whole-array ops.

Example:
    >>> w = window((5,), (3,), strides=(2,), pads=(1, 1))
    >>> w.out, w.begin, w.end
    ((3,), (1,), (1,))
    >>> [tap_slices(w, t) for t in taps(w)]
    [(slice(0, 5, 2),), (slice(1, 6, 2),), (slice(2, 7, 2),)]
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

from modelkit.edge_runtime.errors import KernelError

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


class Window(NamedTuple):
    """Geometry of a sliding window over the spatial dims of an (N, C, *spatial) array.

    `span` is the extent of one dilated kernel; `padded` the extent of the padded input that
    the windows reach (the input plus its pads, plus any cells a ceil_mode window needs).
    """

    kernel: tuple
    strides: tuple
    dilations: tuple
    begin: tuple
    end: tuple
    out: tuple
    span: tuple
    padded: tuple


def _as_tuple(values):
    return tuple(int(v) for v in values) if values is not None and len(values) else None


def window(in_shape, kernel, *, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
           ceil_mode=0, op="Conv") -> Window:
    """The `Window` of an ONNX Conv/Pool node over spatial input dims `in_shape`.

    `pads` are ONNX-style (all begins, then all ends). With `ceil_mode` the output size is
    rounded up, keeping the rule that the last window must start inside the input or the
    leading padding (PyTorch's and onnxruntime's rule). Results are cached per geometry:
    a model calls this with the same arguments on every run.

    Example:
        >>> window((4, 4), (3, 3), auto_pad="SAME_UPPER").begin
        (1, 1)
    """
    return _window(tuple(int(n) for n in in_shape), tuple(int(k) for k in kernel),
                   _as_tuple(strides), _as_tuple(dilations), _as_tuple(pads), auto_pad,
                   int(ceil_mode), op)


@functools.lru_cache(maxsize=4096)
def _window(in_shape, kernel, strides, dilations, pads, auto_pad, ceil_mode, op) -> Window:
    rank = len(in_shape)
    strides = strides or (1,) * rank
    dilations = dilations or (1,) * rank
    if len(kernel) != rank or len(strides) != rank or len(dilations) != rank:
        raise KernelError(f"{op}: kernel_shape {kernel}, strides {strides} and dilations "
                          f"{dilations} must each have {rank} entries (input spatial dims "
                          f"{in_shape})")
    if auto_pad not in AUTO_PADS:
        raise KernelError(f"{op}: auto_pad must be one of {AUTO_PADS}, got {auto_pad!r}")
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(-(-n // s) for n, s in zip(in_shape, strides))
        total = [max(0, (o - 1) * s + k - n) for o, s, k, n in zip(out, strides, span, in_shape)]
        small = tuple(t // 2 for t in total)
        large = tuple(t - t // 2 for t in total)
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    else:
        if auto_pad == "VALID" or not pads:
            begin = end = (0,) * rank
        elif len(pads) != 2 * rank:
            raise KernelError(f"{op}: pads must have {2 * rank} entries, got {list(pads)}")
        else:
            begin, end = pads[:rank], pads[rank:]
        out = tuple(_output_size(n, k, s, b, e, ceil_mode, op)
                    for n, k, s, b, e in zip(in_shape, span, strides, begin, end))
    padded = tuple(max(b + n + e, (o - 1) * s + k)
                   for n, b, e, o, s, k in zip(in_shape, begin, end, out, strides, span))
    return Window(kernel, strides, dilations, begin, end, out, span, padded)


def _output_size(n, span, stride, begin, end, ceil_mode, op):
    room = n + begin + end - span
    if room < 0:
        raise KernelError(f"{op}: kernel extent {span} is larger than the padded input "
                          f"extent {n + begin + end}")
    size = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (size - 1) * stride >= n + begin:
        size -= 1
    return size


def taps(w: Window):
    """Every kernel tap (tuple of indices into the kernel), in C order."""
    return itertools.product(*(range(k) for k in w.kernel))


def tap_slices(w: Window, tap, offset=None) -> tuple:
    """Slices of the padded spatial dims that the output positions read through `tap`.

    `offset` shifts where the first window starts (default 0 per dim).
    """
    offset = offset or (0,) * len(tap)
    return tuple(slice(o + t * d, o + t * d + (n - 1) * s + 1, s)
                 for o, t, d, n, s in zip(offset, tap, w.dilations, w.out, w.strides))


def pad_spatial(xp, x, w: Window, value=0):
    """`x` padded with `value` so that every window of `w` lies inside it (x itself if none)."""
    in_shape = x.shape[2:]
    extent = w.padded
    if extent == tuple(in_shape):
        return x
    # NOTE: a filled buffer plus one assignment is several times faster than xp.pad on the
    # small activations of a CNN
    padded = xp.full(x.shape[:2] + extent, value, dtype=x.dtype)
    inner = tuple(slice(b, b + n) for b, n in zip(w.begin, in_shape))
    padded[(slice(None), slice(None)) + inner] = x
    return padded


def strided_windows(xp, padded, w: Window):
    """A read-only view (N, C, *kernel, *out) of the windows of `w` over a padded array."""
    spatial_strides = padded.strides[2:]
    return xp.lib.stride_tricks.as_strided(
        padded, padded.shape[:2] + w.kernel + w.out,
        padded.strides[:2] + tuple(st * d for st, d in zip(spatial_strides, w.dilations))
        + tuple(st * s for st, s in zip(spatial_strides, w.strides)))


def crop_spatial(x_padded, w: Window, in_shape):
    """The view of `x_padded` that holds the original, unpadded input region."""
    return x_padded[(slice(None), slice(None)) + tuple(
        slice(b, b + n) for b, n in zip(w.begin, in_shape))]


def size_of(shape) -> int:
    return math.prod(int(n) for n in shape)
