"""Conv and ConvTranspose (any spatial rank), and the gradients of Conv for training.

Convolution is im2col + one GEMM per call: the padded input is gathered tap by tap into a
channel-major column array of shape (C*K, N*OUT) (K kernel taps, OUT output positions), so
the weight, viewed as (M, C*K), multiplies the whole batch in one large GEMM (numpy's matmul
would otherwise run N small ones); the bias is added while (M, N, OUT) is transposed into the
NC* output layout. Groups become one batched matmul; depthwise convolutions (one input channel
per group) are a sum over taps of shifted slices times per-channel weights.
ConvTranspose and the input gradient of Conv are the same computation: a GEMM with the
transposed weight followed by col2im (scatter-adding each tap's slice back into place).
Prepared (load-time weight) 3x3 stride-1 convs may instead run Winograd F(2x2, 3x3), where
it is measured to be faster on the input shape (see `prepare_conv`).

Example:
    >>> import numpy as np
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3), dtype=np.float32)
    >>> conv(np, x, w, pads=[1, 1, 1, 1])[0][0, 0, 0]
    array([10., 18., 24., 18.], dtype=float32)
"""

from __future__ import annotations

import functools
import threading
import time
from typing import NamedTuple

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel
from modelkit.edge_runtime.shape_cache import ShapeCache
from modelkit.edge_runtime.kernels.spatial import (
    Window, crop_spatial, pad_spatial, size_of, strided_windows, tap_slices, taps, window,
)


def _check_shapes(op, x, w, group, channels_axis):
    if x.ndim < 3 or x.ndim != w.ndim:
        raise KernelError(f"{op}: input X of shape {x.shape} and weight W of shape {w.shape} "
                          "must both have rank >= 3 and the same rank")
    if group < 1 or x.shape[1] % group:
        raise KernelError(f"{op}: input channels {x.shape[1]} are not divisible by group {group}")
    expected = x.shape[1] // group if channels_axis == 1 else x.shape[1]
    if w.shape[channels_axis] != expected:
        raise KernelError(f"{op}: weight W of shape {w.shape} expects {w.shape[channels_axis]} "
                          f"input channels in dim {channels_axis}, input X of shape {x.shape} "
                          f"with group {group} gives {expected}")


def _im2col(xp, x, win: Window):
    """Columns of shape (N, C, K, OUT): column [n, c, t, o] is input c read by tap t at o."""
    n, c = x.shape[:2]
    windows = strided_windows(xp, pad_spatial(xp, x, win), win)
    return xp.ascontiguousarray(windows).reshape(n, c, size_of(win.kernel), size_of(win.out))


def _col2im(xp, cols, win: Window, extent, offset=None):
    """Scatter-add columns (N, C, K, *out) into a zero array of spatial `extent`."""
    n, c = cols.shape[:2]
    image = xp.zeros((n, c) + tuple(extent), dtype=cols.dtype)
    for i, tap in enumerate(taps(win)):
        image[(slice(None), slice(None)) + tap_slices(win, tap, offset)] += cols[:, :, i]
    return image


def _is_pointwise(win: Window) -> bool:
    return all(k == 1 for k in win.kernel) and not any(win.begin) and not any(win.end)


_CACHE_BYTES = 1 << 18


def _depthwise(xp, x, w, win: Window):
    """Conv with one input channel per group: sum over taps of slice * per-channel weight.

    Runs over a few samples at a time so that the accumulator stays in cache.
    """
    n, c = x.shape[:2]
    m = w.shape[0]
    padded = pad_spatial(xp, x, win)
    if m != c:
        padded = xp.repeat(padded, m // c, axis=1)
    taps_w = w.reshape(m, -1).astype(x.dtype, copy=False)
    weight_shape = (m,) + (1,) * len(win.out)
    slices = [tap_slices(win, tap) for tap in taps(win)]
    y = xp.empty((n, m) + win.out, dtype=x.dtype)
    chunk = max(1, _CACHE_BYTES // max(1, m * size_of(win.out) * y.itemsize))
    tmp = xp.empty((min(chunk, n), m) + win.out, dtype=x.dtype)
    for start in range(0, n, chunk):
        block = slice(start, start + chunk)
        out, scratch = y[block], tmp[:y[block].shape[0]]
        for i, spatial in enumerate(slices):
            sliced = padded[(block, slice(None)) + spatial]
            weight = taps_w[:, i].reshape(weight_shape)
            if i == 0:
                xp.multiply(sliced, weight, out=out)
            else:
                xp.multiply(sliced, weight, out=scratch)
                out += scratch
    return y


_IM2COL_BYTES = 1 << 22


def _columns_times_weight(xp, x, w, win: Window, group):
    """(N, M, OUT) = weight (M, C/g*K) per group times the columns of x.

    The columns are built a few samples at a time (about 4 MiB) and the GEMM writes straight
    into its slice of the output, so the columns are still in cache when the GEMM reads them.
    """
    n, c = x.shape[:2]
    m, out = w.shape[0], size_of(win.out)
    weight = w.reshape(group, m // group, -1)
    if _is_pointwise(win):
        strided = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in win.strides)]
        return xp.matmul(weight, strided.reshape(n, group, c // group, out)).reshape(n, m, out)
    padded = pad_spatial(xp, x, win)
    per_sample = c * size_of(win.kernel) * out * x.itemsize
    chunk = max(1, _IM2COL_BYTES // max(1, per_sample))
    y = xp.empty((n, m, out), dtype=xp.result_type(x, w))
    for start in range(0, n, chunk):
        windows = strided_windows(xp, padded[start:start + chunk], win)
        cols = xp.ascontiguousarray(windows).reshape(windows.shape[0], group, -1, out)
        xp.matmul(weight, cols, out=y[start:start + chunk].reshape(-1, group, m // group, out))
    return y


def _channel_major_columns(xp, x, win: Window, ones_row: bool = False):
    """Columns (C*K, N*OUT) of x: row c*K + t, column n*OUT + o is input c of sample n read by
    tap t at output position o; with `ones_row`, one more row of ones (for a bias column in
    the weight)."""
    n, c = x.shape[:2]
    rows, positions = c * size_of(win.kernel), n * size_of(win.out)
    if n == 1 and _is_pointwise(win) and all(s == 1 for s in win.strides) and not ones_row:
        return x.reshape(c, -1)
    padded = pad_spatial(xp, x.transpose((1, 0) + tuple(range(2, x.ndim))), win)
    columns = xp.empty((rows + ones_row, positions), dtype=x.dtype)
    if ones_row:
        columns[rows] = 1
    if n == 1:
        # NOTE: for one sample a single copy of the strided window view beats a copy per tap
        # (measured 1.4-3x on ResNet and CNN layers); for whole batches it is up to 15% slower
        windows = strided_windows(xp, padded, win)
        xp.copyto(columns[:rows].reshape(windows.shape), windows)
    elif win.out[-1] <= _SHORT_ROWS and size_of(win.out) <= _SHORT_ROWS ** 2:
        # NOTE: a copy per tap moves rows of out[-1] elements; when they are this short one
        # gather with cached indices is faster (ResNet's 4x4 and 2x2 stages: 1.7-2.9x)
        flat = xp.ascontiguousarray(padded).reshape(c, -1)
        # numpy buffers a take into `out` unless told the indices need no check (they are ours)
        unchecked = {"mode": "clip"} if xp is np else {}
        xp.take(flat, _gather_indices(xp, n, win), axis=1, out=columns[:rows].reshape(c, -1),
                **unchecked)
    else:
        cols = columns[:rows].reshape((c, size_of(win.kernel), n) + win.out)
        for i, tap in enumerate(taps(win)):
            cols[:, i] = padded[(slice(None), slice(None)) + tap_slices(win, tap)]
    return columns


_SHORT_ROWS = 8


@functools.lru_cache(maxsize=64)
def _gather_indices(xp, n, win: Window):
    """Flat positions in a channel's padded (N, *padded) block that give its columns in
    (K, N, *out) order; computed once per module, batch size and geometry."""
    rank = len(win.out)
    flat_strides = [size_of(win.padded[d + 1:]) for d in range(rank)]
    base = xp.arange(n, dtype=xp.int64).reshape((n,) + (1,) * rank) * size_of(win.padded)
    for d in range(rank):
        positions = xp.arange(win.out[d], dtype=xp.int64) * (win.strides[d] * flat_strides[d])
        base = base + positions.reshape((1,) * (d + 1) + (-1,) + (1,) * (rank - d - 1))
    offsets = xp.asarray([sum(t * dil * st for t, dil, st in zip(tap, win.dilations, flat_strides))
                          for tap in taps(win)], dtype=xp.int64)
    return (offsets.reshape((-1,) + (1,) * (rank + 1)) + base).reshape(-1)


_COLUMN_BYTES = 1 << 26


def _channel_major_conv(xp, x, w, b, win: Window, weight_and_bias=None):
    """Ungrouped Conv as W (M, C*K) times channel-major columns, then transposed to (N, M, OUT).

    `weight_and_bias`: W with b as an extra column, built once by a prepared kernel; the bias
    then comes out of the GEMM (the columns get a row of ones) and the transposition is a
    plain copy, 2-3x faster than a copy that adds the bias on the way (measured 212 -> 60 us
    for 32 channels of 28x28 at batch 32). Batches whose columns would exceed 64 MiB run in
    chunks of samples.
    """
    n, c = x.shape[:2]
    m, out = w.shape[0], size_of(win.out)
    folded = weight_and_bias is not None
    weight = weight_and_bias if folded else w.reshape(m, -1)
    y = xp.empty((n, m, out), dtype=xp.result_type(x, w))
    bias = None if b is None or folded else b.reshape(m, 1)
    chunk = max(1, _COLUMN_BYTES // max(1, weight.shape[1] * out * x.itemsize))
    for start in range(0, n, chunk):
        cols = _channel_major_columns(xp, x[start:start + chunk], win, folded)
        target = y[start:start + chunk]
        if target.shape[0] == 1:
            xp.matmul(weight, cols, out=target[0])
            if bias is not None:
                target[0] += bias
            continue
        product = xp.matmul(weight, cols).reshape(m, target.shape[0], out)
        if bias is None:
            target.transpose(1, 0, 2)[...] = product
        elif out >= _PRODUCT_ORDER_FROM:
            xp.add(product, bias.reshape(m, 1, 1), out=target.transpose(1, 0, 2))
        else:
            xp.add(product.transpose(1, 0, 2), bias, out=target)
    return y.reshape((n, m) + win.out)


# NOTE: adding the bias while transposing runs 1.5-2x faster in the product's order when its
# rows are long (196-1024 positions), 10-20% slower when short (16); measured at batch 32
_PRODUCT_ORDER_FROM = 64


@kernel("Conv")
def conv(xp, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None):
    """ONNX Conv: x (N, C, *in) with w (M, C/group, *k) and optional bias b (M,).

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 2, 3, 3), np.float32); w = np.ones((4, 2, 1, 1), np.float32)
        >>> conv(np, x, w, np.arange(4, dtype=np.float32))[0][0, :, 0, 0]
        array([2., 3., 4., 5.], dtype=float32)
    """
    _check_shapes("Conv", x, w, group, 1)
    win = window(x.shape[2:], kernel_shape or w.shape[2:], strides=strides, dilations=dilations,
                 pads=pads, auto_pad=auto_pad, op="Conv")
    n, m = x.shape[0], w.shape[0]
    dtype = x.dtype
    if dtype == xp.float16:
        # NOTE: float16 sums of many products lose digits; accumulate in float32 like
        # onnxruntime does, round once at the end
        x, w = x.astype(xp.float32), w.astype(xp.float32)
    if group == 1:
        return (_channel_major_conv(xp, x, w, b, win).astype(dtype, copy=False),)
    if w.shape[1] == 1 and not _is_pointwise(win):
        y = _depthwise(xp, x, w, win)
    else:
        y = _columns_times_weight(xp, x, w, win, group).reshape((n, m) + win.out)
    if b is not None:
        y += b.reshape((m,) + (1,) * len(win.out))
    return (y.astype(dtype, copy=False),)


def prepare_conv(xp, attrs: dict, constants: list):
    """A Conv kernel for one node whose weight and bias are load-time constants (`constants`:
    per input of the node its constant value, or None), or None where the generic `conv`
    serves as well (weight not constant, grouped, non-float32).

    The weight is reshaped to (M, C*K) once, with the bias as one more column when it is
    small (the columns get a row of ones, so the GEMM adds it), and the window geometry is
    worked out once per input shape. A single sample skips the batch machinery: its columns are one copy of a window
    view of the padded (C, *in) image and the GEMM writes (M, OUT), which already is the
    (1, M, *out) output. Called with other inputs (or dtypes) it runs `conv`.

    A 2-D 3x3 stride-1 undilated Conv also gets its Winograd weight (`_winograd_weight`) at
    prepare time; at the first call with each input shape both paths are timed and the
    faster one is kept for that shape (`WINOGRAD_POLICY`; the choices are in the returned
    function's `winograd_chosen`, input shape -> bool).

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 1, 3, 3), np.float32); w = np.ones((2, 1, 3, 3), np.float32)
        >>> b = np.array([0, 1], np.float32)
        >>> prepare_conv(np, {"pads": [1, 1, 1, 1]}, [None, w, b])(x, w, b)[0][0, :, 0]
        array([[4., 6., 4.],
               [5., 7., 5.]], dtype=float32)
    """
    w, b = (list(constants[1:3]) + [None, None])[:2]
    if (attrs.get("group", 1) != 1 or w is None or w.ndim < 3 or w.dtype != xp.float32
            or (b is not None and (b.dtype != w.dtype or b.shape != (w.shape[0],)))):
        return None
    m = w.shape[0]
    weight = xp.ascontiguousarray(w.reshape(m, -1))
    bias = None if b is None else b.reshape(m, 1)
    # NOTE: the bias is added inside the GEMM (an extra weight column times a row of ones in
    # the columns): 0.5-3 us less than a separate pass at batch 1 on the sample CNNs' layers,
    # and see _channel_major_conv for batches. That needs a copy of the weight, so only small
    # weights get it: the others stay views on the mapped file (ResNet-18: peak RSS 116 MiB
    # with every weight copied, 76 MiB with this limit)
    fold = b is not None and weight.nbytes <= _FOLD_BYTES
    weight_and_bias = xp.concatenate([weight, bias], axis=1) if fold else None
    geometries = ShapeCache()  # input shape -> (Window, _SampleColumns or None)
    winograd_applies = _winograd_applies(w, attrs)
    # NOTE: the Winograd weight (16/9 the size of w, a copy) is made only when a shape with
    # enough tiles first arrives: batch-1 serving and cold start keep w mapped from the file
    winograd_weight = None
    # per input shape: whether Winograd ran faster than im2col there (measured at first sight)
    winograd_chosen = ShapeCache()

    def prepared_conv(x, w_in, b_in=None):
        if w_in is not w or b_in is not b or x.dtype != weight.dtype:
            return conv(xp, x, w_in, b_in, **attrs)
        if winograd_applies:
            if winograd_chosen.computed(x.shape, lambda: (
                    _winograd_worth_trying(x.shape, w.shape)
                    and _winograd_chosen(xp, lambda: winograd(x), lambda: im2col_conv(x)))):
                return (winograd(x),)
        return im2col_conv(x)

    def winograd(x):
        nonlocal winograd_weight
        if winograd_weight is None:
            winograd_weight = _winograd_weight(xp, w)
        win = window(x.shape[2:], (3, 3), pads=attrs.get("pads"),
                     auto_pad=attrs.get("auto_pad", "NOTSET"), op="Conv")
        return _winograd_conv(xp, x, winograd_weight, b, win)

    def im2col_conv(x):
        win, sample = geometries.computed(x.shape, lambda: _conv_geometry(x, w, attrs))
        if sample is None:
            return (_channel_major_conv(xp, x, w, b, win, weight_and_bias),)
        if sample.view_shape is None:
            y = xp.matmul(weight, x.reshape(sample.columns))
        elif fold:
            y = xp.matmul(weight_and_bias, _sample_columns(xp, x, sample, True))
        else:
            y = xp.matmul(weight, _sample_columns(xp, x, sample, False))
        added = fold and sample.view_shape is not None
        if sample.grid is None:
            if bias is not None and not added:
                y += bias
            return (y.reshape(sample.out_shape),)
        out = xp.empty(sample.out_shape, dtype=y.dtype)
        outputs = y.reshape(sample.grid)[sample.crop]
        if bias is None or added:
            out[0] = outputs
        else:
            xp.add(outputs, bias.reshape((m,) + (1,) * (len(sample.grid) - 1)), out=out[0])
        return (out,)
    prepared_conv.winograd_chosen = winograd_chosen
    return prepared_conv




# Winograd F(2x2, 3x3) (Lavin & Gray 2015): a 3x3 stride-1 conv on 4x4 input tiles d, 2x2
# output tiles y = A^T [(G g G^T) * (B^T d B)] A, i.e. 16 GEMMs with K = C instead of one with
# K = 9*C (2.25x fewer multiply-adds). The transform matrices hold only 0, +-1 and 1/2, so
# float32 keeps within a few ulps of the direct sum for 3x3 kernels.
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))

# "measure": time both paths at the first call with an input shape and keep the faster one;
# "always" / "never" pin the choice (for benchmarks and tests). Read when a Conv is prepared.
WINOGRAD_POLICY = "measure"


def _winograd_applies(w, attrs) -> bool:
    """Whether a prepared (group 1, float32) Conv with weight w is a 2-D 3x3 stride-1
    undilated one, the only kind F(2x2, 3x3) computes."""
    def given(name, default):
        value = attrs.get(name)
        return default if value is None or not len(value) else tuple(int(v) for v in value)
    return (WINOGRAD_POLICY != "never" and w.ndim == 4 and tuple(w.shape[2:]) == (3, 3)
            and given("kernel_shape", (3, 3)) == (3, 3) and given("strides", (1, 1)) == (1, 1)
            and given("dilations", (1, 1)) == (1, 1))


def _winograd_weight(xp, w):
    """U = G g G^T for every (output, input) channel pair of w (M, C, 3, 3), laid out as
    (16, C, M) (tile position, then the GEMM's right operand); computed in float64.

    Example:
        >>> import numpy as np
        >>> _winograd_weight(np, np.ones((1, 1, 3, 3), np.float32))[:4, 0, 0]
        array([1. , 1.5, 0.5, 1. ], dtype=float32)
    """
    g = xp.asarray(_WINOGRAD_G, dtype=xp.float64)
    u = xp.einsum("ai,mcij,bj->abcm", g, w.astype(xp.float64), g)
    return xp.ascontiguousarray(u.reshape(16, w.shape[1], w.shape[0]).astype(w.dtype))


def _winograd_conv(xp, x, u, b, win: Window):
    """Conv of x (N, C, H, W) by the 3x3 weight whose `_winograd_weight` is u, plus bias b.

    Everything runs in a channels-last (rows, columns, N, C) layout so that each transform
    step is an elementwise op over contiguous N*C runs and each tile position's GEMM operand
    is a plain (tiles*N, C) matrix (the same steps on NCHW views with stride-2 rows of 7 were
    3x slower, measured at batch 32 on 14x14).

    Example:
        >>> import numpy as np
        >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        >>> u = _winograd_weight(np, np.ones((1, 1, 3, 3), np.float32))
        >>> _winograd_conv(np, x, u, None, window((4, 4), (3, 3), pads=[1, 1, 1, 1]))[0, 0, 0]
        array([10., 18., 24., 18.], dtype=float32)
    """
    n, m = x.shape[0], u.shape[2]
    y = xp.empty((n, m) + win.out, dtype=x.dtype)
    tiles_per_sample = -(-win.out[0] // 2) * -(-win.out[1] // 2)
    chunk = max(1, _WINOGRAD_BYTES // (16 * tiles_per_sample * m * x.itemsize))
    for start in range(0, n, chunk):
        _winograd_block(xp, x[start:start + chunk], u, b, win, y[start:start + chunk])
    return y


# NOTE: samples go through in chunks whose GEMM output is about 4 MiB, so each transform
# reads what the previous step wrote while it is still in cache (batch 32, measured: 64
# channels of 32x32 37 -> 21 ms, 64 of 16x16 5.5 -> 4.7 ms; 2 and 8 MiB chunks were slower)
_WINOGRAD_BYTES = 1 << 22


def _winograd_block(xp, x, u, b, win: Window, y):
    """`_winograd_conv` of the samples x, written into y."""
    n, c, h, w = x.shape
    m = u.shape[2]
    (top, left), (out_h, out_w) = win.begin, win.out
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    scratch = _scratch(xp, x.dtype)
    # rounded up to whole tiles: the extra zero rows/columns only feed cropped outputs
    padded = scratch("padded", (2 * tiles_h + 2, 2 * tiles_w + 2, n, c))
    padded.fill(0)
    padded[top:top + h, left:left + w] = x.transpose(2, 3, 0, 1)
    # V = B^T d B: rows first (over every column), then columns
    rows = [padded[i:i + 2 * tiles_h:2] for i in range(4)]
    half = scratch("half", (4,) + rows[0].shape)
    _winograd_input_step(xp, rows, half)
    v = scratch("v", (4, 4, tiles_h, tiles_w, n, c))
    _winograd_input_step(xp, [half[:, :, j:j + 2 * tiles_w:2] for j in range(4)],
                         v.transpose(1, 0, 2, 3, 4, 5))
    # the product's 17th slab holds the bias, which the output matrix adds to every output
    product = scratch("product", (17, tiles_h * tiles_w * n, m))
    xp.matmul(v.reshape(16, -1, c), u, out=product[:16])
    used = 16 if b is None else 17
    if b is not None:
        product[16] = b
    # Y = A^T M A: the 4 outputs of each tile as one (4, 16) GEMM over all tiles and channels
    # (one pass over the product: 4-5% faster end to end than 8 elementwise passes)
    outputs = scratch("outputs", (2, 2, tiles_h, tiles_w, n * m))
    xp.matmul(_winograd_output_matrix(xp, x.dtype)[:, :used], product[:used].reshape(used, -1),
              out=outputs.reshape(4, -1))
    rows_of_y = y.reshape(n * m, out_h, out_w)
    # NOTE: one output row and column parity at a time: a whole (H, W, N*M) -> (N*M, H, W)
    # transposing copy runs 3-4x slower (785 -> 175 us for 64 channels of 14x14, batch 32)
    for i in range(out_h):
        for j in range(2):
            columns = rows_of_y[:, i, j::2]
            xp.copyto(columns, outputs[i % 2, j, i // 2, :columns.shape[1]].T)


@functools.lru_cache(maxsize=8)
def _winograd_output_matrix(xp, dtype):
    """A^T . A as a (4, 16) matrix, plus a column of ones for the bias: row 2*r + s gives
    output (r, s) of a tile from its 16 transformed products."""
    a = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
    transform = np.einsum("ra,sb->rsab", a, a).reshape(4, 16)
    return xp.asarray(np.concatenate([transform, np.ones((4, 1))], axis=1), dtype=dtype)


# NOTE: the transforms' buffers (~15 MiB at most, by the chunking above) are kept per thread
# and reused by every Winograd conv that thread runs: fresh multi-MiB arrays each call come
# from mmap and page-fault on first touch, which made the conv 2-4x slower whenever the
# allocator had not been warmed by larger arrays (7.4 vs 1.8 ms, 32 channels of 14x14).
_SCRATCH = threading.local()


def _scratch(xp, dtype):
    """A function (name, shape) -> this thread's reusable array of that shape for `name`
    (contents undefined), growing its storage when a larger one is asked for."""
    buffers = _SCRATCH.__dict__.setdefault((xp.__name__, xp.dtype(dtype).str), {})

    def buffer(name, shape):
        size = size_of(shape)
        storage = buffers.get(name)
        if storage is None or storage.size < size:
            storage = buffers[name] = xp.empty(size, dtype=dtype)
        return storage[:size].reshape(shape)
    return buffer


def _winograd_input_step(xp, d, out):
    """out[0..3] = B^T applied along the list d of four arrays (one transform axis)."""
    xp.subtract(d[0], d[2], out=out[0])
    xp.add(d[1], d[2], out=out[1])
    xp.subtract(d[2], d[1], out=out[2])
    xp.subtract(d[1], d[3], out=out[3])


_RACE_RUNS = 3  # timed runs per path when choosing; the fastest counts


def _winograd_worth_trying(x_shape, w_shape) -> bool:
    """Whether a conv of x (N, C, H, W) by w (M, C, 3, 3) is big enough to time Winograd on.

    Small convs (a batch-1 ResNet-18 layer is 9.4 M multiply-adds) gain little, and the race
    would cost their first call two extra runs and a float32 copy of the weight 16/9 its size.

    Example:
        >>> _winograd_worth_trying((32, 32, 14, 14), (64, 32, 3, 3))
        True
        >>> _winograd_worth_trying((1, 64, 16, 16), (64, 64, 3, 3))
        False
    """
    n, c, h, w = x_shape
    return WINOGRAD_POLICY == "always" or n * h * w * c * w_shape[0] * 9 >= _WINOGRAD_MIN_MACS


_WINOGRAD_MIN_MACS = 1 << 25


def _winograd_chosen(xp, winograd, im2col) -> bool:
    """Whether `winograd` runs faster than `im2col` (both zero-argument calls of the same
    conv), by the best of a few timed runs each; honours `WINOGRAD_POLICY`."""
    if WINOGRAD_POLICY != "measure":
        return WINOGRAD_POLICY == "always"
    return _best_time(xp, winograd) < _best_time(xp, im2col)


def _best_time(xp, run) -> float:
    # a GPU array module runs asynchronously: wait for the device before reading the clock
    stream = getattr(getattr(xp, "cuda", None), "get_current_stream", None)
    best = float("inf")
    for _ in range(_RACE_RUNS):
        start = time.perf_counter()
        run()
        if stream is not None:
            stream().synchronize()
        best = min(best, time.perf_counter() - start)
    return best
_FOLD_BYTES = 1 << 20  # the largest weight copied to fold the bias in (see prepare_conv)


class _SampleColumns(NamedTuple):
    """How a batch of one becomes its columns (C*K, positions): x (1, C, *in) is copied into a
    zero buffer of `buffer_size` elements seen as an image of shape `padded` at `inner`
    (`padded` None: x itself is the image), read through a window view of `view_shape` and
    `view_strides` (bytes) and copied into `columns` shape (`view_shape` None: x reshaped
    already is the columns, a pointwise Conv). `grid`: None, or the GEMM computes outputs on
    the padded grid, (M, *grid), and `crop` selects the real ones (see `_conv_geometry`)."""

    buffer_size: int
    image_size: int
    padded: tuple | None
    inner: tuple
    view_shape: tuple | None
    view_strides: tuple
    columns: tuple
    grid: tuple | None
    crop: tuple | None
    out_shape: tuple


def _conv_geometry(x, w, attrs) -> tuple[Window, _SampleColumns | None]:
    """The window of a Conv over x, and for a batch of one its `_SampleColumns`.

    NOTE: the window-view copy moves rows of out[-1] elements at ~4 ns a row whatever their
    length (5 us for 16 channels of 8x8 under a 3x3 kernel, 18 us for 32 of 14x14). With stride
    1 the columns can instead be whole rows of the flattened padded image, one per (channel,
    tap), 3-5x faster to copy, if the GEMM computes outputs on the padded grid (each output
    row padded[-1] wide) and the real ones are cropped out after: ~0.02 ns per extra
    multiply-add and ~4 ns per cropped row. `_grid_pays` picks the cheaper per layer (timed
    both ways: 0.3-10 us saved per layer where it picks the grid, e.g. 59.4 -> 57.8 us for
    32 channels of 14x14, 139 -> 129 us for 64 of 16x16; 128 of 8x8 stays on the view).
    """
    _check_shapes("Conv", x, w, 1, 1)
    win = window(x.shape[2:], attrs.get("kernel_shape") or w.shape[2:],
                 strides=attrs.get("strides"), dilations=attrs.get("dilations"),
                 pads=attrs.get("pads"), auto_pad=attrs.get("auto_pad", "NOTSET"), op="Conv")
    if x.shape[0] != 1:
        return win, None
    c, m, rank = x.shape[1], w.shape[0], len(win.out)
    taps_per_channel, positions = size_of(win.kernel), size_of(win.out)
    unit = [x.itemsize * size_of(win.padded[d + 1:]) for d in range(rank)]  # bytes per step
    taps_strides = ((x.itemsize * size_of(win.padded),)
                    + tuple(st * d for st, d in zip(unit, win.dilations)))
    inner = (slice(None),) + tuple(slice(b, b + n) for b, n in zip(win.begin, x.shape[2:]))
    out_shape = (1, m) + win.out
    rows = c * taps_per_channel
    grid = win.out[:1] + win.padded[1:]
    if all(s == 1 for s in win.strides) and _grid_pays(rows, m, win.out, size_of(grid)):
        # the last channel's last taps read up to `reach` elements past its image
        reach = sum((k - 1) * d * size_of(win.padded[i + 1:])
                    for i, (k, d) in enumerate(zip(win.kernel[1:], win.dilations[1:]), 1))
        return win, _SampleColumns(
            c * size_of(win.padded) + reach, c * size_of(win.padded), (c,) + win.padded, inner,
            (c,) + win.kernel + (size_of(grid),), taps_strides + (x.itemsize,),
            (rows, size_of(grid)), (m,) + grid,
            (slice(None), slice(None)) + tuple(slice(0, o) for o in win.out[1:]), out_shape)
    pointwise = _is_pointwise(win) and all(s == 1 for s in win.strides)
    return win, _SampleColumns(
        c * size_of(win.padded), c * size_of(win.padded),
        None if win.padded == x.shape[2:] else (c,) + win.padded,
        inner, None if pointwise else (c,) + win.kernel + win.out,
        taps_strides + tuple(st * s for st, s in zip(unit, win.strides)),
        (rows, positions), None, None, out_shape)


def _grid_pays(rows, m, out, grid_positions) -> bool:
    """Whether the padded-grid columns beat the window-view copy, by the costs measured for
    `_conv_geometry` (ns): rows saved against extra GEMM work, cropped rows and one more pass."""
    out_rows = size_of(out[:-1])
    saved = _ROW_NS * rows * out_rows
    extra = (_MULTIPLY_ADD_NS * m * rows * (grid_positions - size_of(out))
             + _ROW_NS * m * out_rows + _PASS_NS)
    return grid_positions > size_of(out) and saved > extra


_ROW_NS, _MULTIPLY_ADD_NS, _PASS_NS = 4, 0.02, 1500


def _sample_columns(xp, x, geometry: _SampleColumns, ones_row: bool):
    """Columns (C*K, positions) of a batch of one, plus a row of ones if `ones_row`: row
    c*K + t is input c read by tap t."""
    if geometry.padded is None:
        image = xp.ascontiguousarray(x[0])
    else:
        image = xp.zeros(geometry.buffer_size, dtype=x.dtype)
        image[:geometry.image_size].reshape(geometry.padded)[geometry.inner] = x[0]
    if type(image) is np.ndarray:
        # NOTE: a view through the ndarray constructor costs 0.3 us, as_strided 2 us
        view = np.ndarray(geometry.view_shape, image.dtype, image, 0, geometry.view_strides)
    else:
        view = xp.lib.stride_tricks.as_strided(image, geometry.view_shape, geometry.view_strides)
    rows, positions = geometry.columns
    columns = xp.empty((rows + ones_row, positions), dtype=x.dtype)
    xp.copyto(columns[:rows].reshape(geometry.view_shape), view)
    if ones_row:
        columns[rows] = 1
    return columns


def _transposed_columns(xp, dy, w, group):
    """Columns (N, C, K, OUT) = per group W^T times dy: the adjoint of the Conv GEMM.

    `w` has the Conv layout (M, C/g, *k) and dy is (N, M, *out).
    """
    n, m = dy.shape[:2]
    cg, k = w.shape[1], size_of(w.shape[2:])
    out = size_of(dy.shape[2:])
    wt = w.reshape(group, m // group, cg * k).transpose(0, 2, 1)
    grouped = dy.reshape(n, group, m // group, out)
    if m // group == 1:
        # NOTE: a contraction over one channel is a broadcast product; matmul would run
        # N*group tiny GEMMs
        cols = wt * grouped
    else:
        cols = xp.matmul(wt, grouped)
    return cols.reshape(n, group * cg, k, out)


def _channel_major_input_grad(xp, dy, w, x_shape, win: Window):
    """Ungrouped conv_input_grad: one (C*K, M) x (M, N*OUT) GEMM, then col2im in channel-major
    layout, transposed back to (N, C, *in) at the end."""
    n, m = dy.shape[:2]
    c, k = x_shape[1], size_of(win.kernel)
    dy_rows = xp.ascontiguousarray(dy.reshape(n, m, -1).transpose(1, 0, 2)).reshape(m, -1)
    cols = xp.matmul(w.reshape(m, -1).T, dy_rows).reshape((c, k, n) + win.out)
    image = xp.zeros((c, n) + win.padded, dtype=cols.dtype)
    for i, tap in enumerate(taps(win)):
        image[(slice(None), slice(None)) + tap_slices(win, tap)] += cols[:, i]
    inner = crop_spatial(image, win, tuple(x_shape[2:]))
    return xp.ascontiguousarray(inner.transpose((1, 0) + tuple(range(2, inner.ndim))))


def conv_input_grad(xp, dy, w, x_shape, *, strides=None, pads=None, dilations=None, group=1):
    """Gradient of `conv` with respect to x, given dy = dL/dy and the weight.

    Example:
        >>> import numpy as np
        >>> dy = np.ones((1, 1, 2, 2), np.float32); w = np.ones((1, 1, 2, 2), np.float32)
        >>> conv_input_grad(np, dy, w, (1, 1, 3, 3))[0, 0]
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]], dtype=float32)
    """
    in_shape = tuple(x_shape[2:])
    win = window(in_shape, w.shape[2:], strides=strides, dilations=dilations, pads=pads,
                 op="Conv")
    if group == 1:
        return _channel_major_input_grad(xp, dy, w, x_shape, win)
    cols = _transposed_columns(xp, dy, w, group).reshape(
        (dy.shape[0], x_shape[1], size_of(win.kernel)) + win.out)
    image = _col2im(xp, cols, win, win.padded)
    return xp.ascontiguousarray(crop_spatial(image, win, in_shape))


def conv_weight_grad(xp, x, dy, w_shape, *, strides=None, pads=None, dilations=None, group=1):
    """Gradient of `conv` with respect to the weight (shape `w_shape`), given x and dy.

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 1, 3, 3), np.float32); dy = np.ones((1, 1, 2, 2), np.float32)
        >>> conv_weight_grad(np, x, dy, (1, 1, 2, 2))[0, 0]
        array([[4., 4.],
               [4., 4.]], dtype=float32)
    """
    n, c = x.shape[:2]
    m = w_shape[0]
    win = window(x.shape[2:], w_shape[2:], strides=strides, dilations=dilations, pads=pads,
                 op="Conv")
    if group == 1:
        # one (M, N*OUT) x (N*OUT, C*K) GEMM over the whole batch
        dy_rows = xp.ascontiguousarray(dy.reshape(n, m, -1).transpose(1, 0, 2)).reshape(m, -1)
        return xp.matmul(dy_rows, _channel_major_columns(xp, x, win).T).reshape(w_shape)
    if _is_pointwise(win):
        strided = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in win.strides)]
        cols = strided.reshape(n, c, 1, size_of(win.out))
    else:
        cols = _im2col(xp, x, win)
    out = cols.shape[-1]
    grouped_cols = cols.reshape(n, group, -1, out)
    grouped_dy = dy.reshape(n, group, m // group, out)
    if group == 1:
        dw = xp.tensordot(grouped_dy[:, 0], grouped_cols[:, 0], axes=([0, 2], [0, 2]))
    else:
        dw = xp.einsum("ngmo,ngko->gmk", grouped_dy, grouped_cols)
    return dw.reshape(w_shape)


def _transpose_geometry(x, w, auto_pad, dilations, kernel_shape, output_padding,
                        output_shape, pads, strides):
    """(window, output spatial shape, offset, extent) of a ConvTranspose.

    `window` is the Conv whose adjoint this is, seen over a scratch buffer of spatial size
    `extent` in which input position i and kernel tap t land at offset + i*stride + t*dilation;
    the output is the buffer from window.begin on. Follows the ONNX spec: output_shape, when
    given, decides the pads (SAME_UPPER puts the odd pad at the end, anything else at the start).
    """
    in_shape = x.shape[2:]
    rank = len(in_shape)
    kernel = tuple(kernel_shape or w.shape[2:])
    strides = tuple(strides or (1,) * rank)
    dilations = tuple(dilations or (1,) * rank)
    output_padding = tuple(output_padding or (0,) * rank)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    natural = [s * (n - 1) + p + k for s, n, p, k in zip(strides, in_shape, output_padding, span)]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = list(output_shape)[-rank:] if output_shape is not None else [
            n * s for n, s in zip(in_shape, strides)]
        if pads and auto_pad == "NOTSET":
            begin = list(pads[:rank])
        else:
            total = [nat - o for nat, o in zip(natural, out)]
            begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        pads = [0] * (2 * rank) if auto_pad == "VALID" or not pads else list(pads)
        begin = pads[:rank]
        out = [nat - b - e for nat, b, e in zip(natural, begin, pads[rank:])]
    # The windows start at -begin in output coordinates; a buffer from min(0, -begin) keeps
    # every index non-negative (negative begins come from output_shape larger than natural).
    offset = tuple(max(0, -b) for b in begin)
    start = tuple(max(0, b) for b in begin)
    extent = tuple(max(o + s * (n - 1) + sp, st + size)
                   for o, s, n, sp, st, size in zip(offset, strides, in_shape, span, start, out))
    win = Window(kernel, strides, dilations, start, (0,) * rank, tuple(in_shape), tuple(span),
                 extent)
    return win, tuple(out), offset, extent


@kernel("ConvTranspose")
def conv_transpose(xp, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                   kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                   strides=None):
    """ONNX ConvTranspose: x (N, C, *in) with w (C, M/group, *k) and optional bias b (M,).

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 1, 2, 2), np.float32); w = np.ones((1, 1, 2, 2), np.float32)
        >>> conv_transpose(np, x, w)[0][0, 0]
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]], dtype=float32)
    """
    _check_shapes("ConvTranspose", x, w, group, 0)
    win, out, offset, extent = _transpose_geometry(
        x, w, auto_pad, dilations, kernel_shape, output_padding, output_shape, pads,
        strides)
    n, c = x.shape[:2]
    m = w.shape[1] * group
    # ConvTranspose is the adjoint of a Conv whose weight is w viewed as (C, M/g, *k)
    cols = _transposed_columns(xp, x, w, group).reshape((n, m, size_of(win.kernel)) + win.out)
    image = _col2im(xp, cols, win, extent, offset)
    y = image[(slice(None), slice(None)) + tuple(slice(s, s + o) for s, o in zip(win.begin, out))]
    y = xp.ascontiguousarray(y)
    if b is not None:
        y += b.reshape((m,) + (1,) * len(out))
    return (y,)


def _centered(xp, q, zero_point):
    """Quantized values minus their zero point (per output channel if 1-D), as float64.

    float64 holds every int8/uint8 dot product of realistic length exactly and runs on BLAS.
    """
    values = q.astype(xp.float64)
    if zero_point is not None:
        zp = zero_point.astype(xp.float64)
        values -= zp.reshape((-1,) + (1,) * (q.ndim - 1)) if zp.ndim == 1 and zp.size > 1 else zp
    return values


@kernel("ConvInteger", since=10)
def conv_integer(xp, x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET",
                 dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    """ONNX ConvInteger: Conv of (x - x_zero_point) and (w - w_zero_point), in int32.

    Example:
        >>> import numpy as np
        >>> x = np.full((1, 1, 2, 2), 3, np.uint8); w = np.ones((1, 1, 2, 2), np.uint8)
        >>> conv_integer(np, x, w, np.array(1, np.uint8))[0]
        array([[[[8]]]], dtype=int32)
    """
    y = conv(xp, _centered(xp, x, x_zero_point), _centered(xp, w, w_zero_point),
             auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
             pads=pads, strides=strides)[0]
    return (xp.rint(y).astype(xp.int32),)


@kernel("QLinearConv", since=10)
def qlinear_conv(xp, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                 b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                 pads=None, strides=None):
    """ONNX QLinearConv: the int32 convolution (plus int32 bias), requantized to y's scale and
    zero point (w_scale and w_zero_point may be per output channel).

    Example:
        >>> import numpy as np
        >>> q = np.full((1, 1, 2, 2), 2, np.uint8); s = np.array(0.5, np.float32)
        >>> z = np.array(0, np.uint8)
        >>> qlinear_conv(np, q, s, z, q, s, z, s, z)[0]
        array([[[[8]]]], dtype=uint8)
    """
    acc = conv(xp, _centered(xp, x, x_zero_point), _centered(xp, w, w_zero_point),
               auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
               pads=pads, strides=strides)[0]
    channel_shape = (-1,) + (1,) * (x.ndim - 2)
    if b is not None:
        acc += b.astype(xp.float64).reshape(channel_shape)
    w_scale = w_scale.astype(xp.float64)
    if w_scale.ndim == 1 and w_scale.size > 1:
        w_scale = w_scale.reshape(channel_shape)
    scale = x_scale.astype(xp.float64) * w_scale / y_scale.astype(xp.float64)
    y = xp.rint(acc * scale) + y_zero_point.astype(xp.float64)
    info = xp.iinfo(y_zero_point.dtype)
    return (xp.clip(y, info.min, info.max).astype(y_zero_point.dtype),)


@kernel("CausalConvWithState", since=27)
def causal_conv_with_state(xp, x, w, b=None, past_state=None, *, activation="none"):
    """ONNX CausalConvWithState: a depthwise causal 1-D conv over (past_state ++ x), with an
    optional SiLU; returns (y, present_state), the last kernel-1 steps for the next call.

    Example:
        >>> import numpy as np
        >>> x = np.array([[[1., 2., 3.]]], np.float32); w = np.ones((1, 1, 2), np.float32)
        >>> y, state = causal_conv_with_state(np, x, w)
        >>> y, state
        (array([[[1., 3., 5.]]], dtype=float32), array([[[3.]]], dtype=float32))
    """
    if activation not in ("none", "silu", "swish"):
        raise KernelError(f"CausalConvWithState: activation must be none, silu or swish, got "
                          f"{activation!r}")
    n, c, _ = x.shape
    history = w.shape[2] - 1
    if past_state is None:
        past_state = xp.zeros((n, c, history), dtype=x.dtype)
    padded = xp.concatenate([past_state, x], axis=2)
    y = conv(xp, padded, w, b, group=c)[0]
    if activation != "none":
        wide = y.astype(xp.float32, copy=False)
        y = (wide * (0.5 * (xp.tanh(0.5 * wide) + 1))).astype(x.dtype, copy=False)
    return y, xp.ascontiguousarray(padded[:, :, padded.shape[2] - history:])


def _bilinear_columns(xp, x, positions, groups):
    """Bilinear samples of x (N, C, H, W) at float positions (h, w), each (N, G, P), zero
    outside the image (GridSample with align_corners=1, zeros padding): (N, C, P)."""
    n, c, height, width = x.shape
    h, w = positions
    h0, w0 = xp.floor(h), xp.floor(w)
    planes = x.reshape(n, groups, c // groups, height * width)
    columns = 0
    for corner_h, corner_w in ((h0, w0), (h0, w0 + 1), (h0 + 1, w0), (h0 + 1, w0 + 1)):
        weight = (1 - xp.abs(h - corner_h)) * (1 - xp.abs(w - corner_w))
        inside = (corner_h >= 0) & (corner_h < height) & (corner_w >= 0) & (corner_w < width)
        index = (xp.clip(corner_h, 0, height - 1) * width + xp.clip(corner_w, 0, width - 1))
        samples = xp.take_along_axis(planes, index.astype(xp.int64)[:, :, None, :], axis=3)
        columns = columns + samples * xp.where(inside, weight, 0).astype(x.dtype)[:, :, None, :]
    return columns.reshape(n, c, -1)


@kernel("DeformConv", since=19)
def deform_conv(xp, x, w, offset, b=None, mask=None, *, dilations=None, group=1,
                kernel_shape=None, offset_group=1, pads=None, strides=None):
    """ONNX DeformConv (2-D): Conv whose kernel taps read x at learned fractional offsets
    (bilinear, zero outside), optionally scaled by a modulation `mask`.

    Example:
        >>> import numpy as np
        >>> x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
        >>> w = np.ones((1, 1, 1, 1), np.float32)
        >>> offset = np.full((1, 2, 3, 3), 0.5, np.float32)   # shift every tap by half a pixel
        >>> deform_conv(np, x, w, offset)[0][0, 0, 0]
        array([2.  , 3.  , 1.75], dtype=float32)
    """
    _check_shapes("DeformConv", x, w, group, 1)
    if x.ndim != 4:
        raise KernelError(f"DeformConv: only 2-D images are supported, got input of shape "
                          f"{x.shape}")
    win = window(x.shape[2:], kernel_shape or w.shape[2:], strides=strides, dilations=dilations,
                 pads=pads, op="DeformConv")
    n, c = x.shape[:2]
    (kh, kw), (oh, ow) = win.kernel, win.out
    expected = (n, offset_group * kh * kw * 2, oh, ow)
    if tuple(offset.shape) != expected:
        raise KernelError(f"DeformConv: offset has shape {tuple(offset.shape)}, expected "
                          f"{expected}")
    offset = offset.reshape(n, offset_group, kh, kw, 2, oh, ow).astype(x.dtype, copy=False)
    tap_h = xp.arange(kh).reshape(kh, 1, 1, 1) * win.dilations[0]
    tap_w = xp.arange(kw).reshape(1, kw, 1, 1) * win.dilations[1]
    out_h = xp.arange(oh).reshape(1, 1, oh, 1) * win.strides[0] - win.begin[0]
    out_w = xp.arange(ow).reshape(1, 1, 1, ow) * win.strides[1] - win.begin[1]
    h = (tap_h + out_h + offset[:, :, :, :, 0]).reshape(n, offset_group, -1)
    wpos = (tap_w + out_w + offset[:, :, :, :, 1]).reshape(n, offset_group, -1)
    cols = _bilinear_columns(xp, x, (h, wpos), offset_group)
    if mask is not None:
        per_group = c // offset_group
        cols = (cols.reshape(n, offset_group, per_group, -1)
                * mask.reshape(n, offset_group, 1, -1).astype(x.dtype)).reshape(n, c, -1)
    m = w.shape[0]
    grouped = cols.reshape(n, group, -1, oh * ow)
    y = xp.matmul(w.reshape(group, m // group, -1), grouped).reshape(n, m, oh, ow)
    if b is not None:
        y += b.reshape(m, 1, 1)
    return (y.astype(x.dtype, copy=False),)
