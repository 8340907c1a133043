"""Neural-network primitives whose forward runs the shared `edge_runtime.kernels`: softmax,
log_softmax, conv, conv_transpose, max/avg pooling, batch/layer/group norm, dropout.
Attributes use ONNX names (strides, pads, dilations, group, kernel_shape), pads in ONNX order.

Example:
    >>> from modelkit.authoring.ops.registry import OPS, onnx_lowering
    >>> onnx_lowering(OPS["conv"], 17).op_type, onnx_lowering(OPS["layer_norm"], 17).op_type
    ('Conv', 'LayerNormalization')
"""

from __future__ import annotations

import itertools

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.grad_mode import is_grad_enabled
from modelkit.authoring.ops.registry import Attr, Onnx, primitive
from modelkit.authoring.random import numpy_generator
from modelkit.edge_runtime.kernels import conv as conv_kernels
from modelkit.edge_runtime.kernels import norm as norm_kernels
from modelkit.edge_runtime.kernels import pool as pool_kernels
from modelkit.edge_runtime.kernels import softmax as softmax_kernels
from modelkit.edge_runtime.plan import tune_allocator

# A training step allocates the same multi-MB activations and gradients every iteration; keep
# them in the heap for reuse instead of page-faulting fresh mappings (see tune_allocator).
tune_allocator()

_CONV_ATTRS = {"strides": Attr("strides"), "pads": Attr("pads"), "dilations": Attr("dilations"),
               "group": Attr("group")}


# ---- softmax -------------------------------------------------------------------------------
@primitive("softmax", onnx=Onnx("Softmax", {"axis": Attr("dim")}, since=13), saves_inputs=False,
           saves_output=True)
def _softmax(xp, x, dim):
    return softmax_kernels.softmax(xp, x, axis=dim)[0]


@_softmax.vjp
def _softmax_vjp(c, g):
    y = c.out
    return (y * (g - (g * y).sum(axis=c.attrs["dim"], keepdims=True)),)


@primitive("log_softmax", onnx=Onnx("LogSoftmax", {"axis": Attr("dim")}, since=13),
           saves_inputs=False, saves_output=True)
def _log_softmax(xp, x, dim):
    return softmax_kernels.log_softmax(xp, x, axis=dim)[0]


@_log_softmax.vjp
def _log_softmax_vjp(c, g):
    return (g - array_module(g).exp(c.out) * g.sum(axis=c.attrs["dim"], keepdims=True),)


# ---- convolution ---------------------------------------------------------------------------
@primitive("conv", onnx=Onnx("Conv", _CONV_ATTRS))
def _conv(xp, x, weight, bias=None, *, strides, pads, dilations, group):
    return conv_kernels.conv(xp, x, weight, bias, strides=strides, pads=pads,
                             dilations=dilations, group=group)[0]


def _unit_stride_input_grad(xp, g, weight, pads):
    """dL/dx of an ungrouped, unit-stride, undilated Conv as the forward Conv of g with the
    flipped, transposed weight and pads k-1-p (None where some pad exceeds k-1).

    The forward kernel's im2col reads M*K rows where conv_input_grad's col2im writes C*K and
    adds them back tap by tap: for M <= C (ResNet's 3x3 blocks) this is 10-40% faster.
    """
    kernel = weight.shape[2:]
    rank = len(kernel)
    flipped = tuple(k - 1 - p for k, p in zip(kernel * 2, pads))
    if min(flipped) < 0:
        return None
    spatial_flip = (slice(None), slice(None)) + (slice(None, None, -1),) * rank
    adjoint = weight[spatial_flip].transpose((1, 0) + tuple(range(2, 2 + rank)))
    return conv_kernels.conv(xp, g, adjoint, pads=list(flipped))[0]


@_conv.vjp
def _conv_vjp(c, g):
    x, weight, bias = c.arrays
    geometry = {k: c.attrs[k] for k in ("strides", "pads", "dilations", "group")}
    xp = array_module(g)
    gx = gw = gb = None
    if c.needs_input_grad[0]:
        rank = weight.ndim - 2
        if (geometry["group"] == 1 and weight.shape[0] <= weight.shape[1]
                and tuple(geometry["strides"] or (1,) * rank) == (1,) * rank
                and tuple(geometry["dilations"] or (1,) * rank) == (1,) * rank):
            gx = _unit_stride_input_grad(xp, g, weight, geometry["pads"] or (0,) * 2 * rank)
        if gx is None:
            gx = conv_kernels.conv_input_grad(xp, g, weight, x.shape, **geometry)
    if c.needs_input_grad[1]:
        gw = conv_kernels.conv_weight_grad(xp, x, g, weight.shape, **geometry)
    if bias is not None and c.needs_input_grad[2]:
        gb = g.sum(axis=(0,) + tuple(range(2, g.ndim)))
    return gx, gw, gb


@primitive("conv_transpose", onnx=Onnx("ConvTranspose", {
    **_CONV_ATTRS, "output_padding": Attr("output_padding")}))
def _conv_transpose(xp, x, weight, bias=None, *, strides, pads, dilations, group,
                    output_padding):
    return conv_kernels.conv_transpose(xp, x, weight, bias, strides=strides, pads=pads,
                                       dilations=dilations, group=group,
                                       output_padding=output_padding)[0]


@_conv_transpose.vjp
def _conv_transpose_vjp(c, g):
    # ConvTranspose is the adjoint of Conv with the same weight: its input gradient is a Conv
    # of g, its weight gradient the Conv weight gradient with the roles of x and dy swapped
    x, weight, bias = c.arrays
    geometry = {k: c.attrs[k] for k in ("strides", "pads", "dilations", "group")}
    gx = gw = gb = None
    if c.needs_input_grad[0]:
        gx = conv_kernels.conv(np, g, weight, **geometry)[0]
    if c.needs_input_grad[1]:
        gw = conv_kernels.conv_weight_grad(np, g, x, weight.shape, **geometry)
    if bias is not None and c.needs_input_grad[2]:
        gb = g.sum(axis=(0,) + tuple(range(2, g.ndim)))
    return gx, gw, gb


# ---- pooling -------------------------------------------------------------------------------
_POOL_ATTRS = {"kernel_shape": Attr("kernel_shape"), "strides": Attr("strides"),
               "pads": Attr("pads"), "ceil_mode": Attr("ceil_mode")}


def _tiles(x_shape, kernel_shape, strides, pads, dilations):
    """True when the pooling windows cover the input exactly once (kernel = stride, no
    padding, no dilation, sizes divisible), as in the usual 2x2/2 MaxPool."""
    rank = len(kernel_shape)
    return (tuple(strides) == tuple(kernel_shape) and not any(pads or ())
            and tuple(dilations or (1,) * rank) == (1,) * rank
            and all(n % k == 0 for n, k in zip(x_shape[2:], kernel_shape)))


@primitive("max_pool", onnx=Onnx("MaxPool", {**_POOL_ATTRS, "dilations": Attr("dilations")}),
           stash=True)
def _max_pool(xp, x, *, kernel_shape, strides, pads, dilations, ceil_mode):
    """Stashes a private copy of the output for the tiling backward (a copy: under no_grad an
    in-place op writes into the output's array, which PyTorch allows after max_pool)."""
    y = pool_kernels.max_pool(xp, x, kernel_shape=kernel_shape, strides=strides, pads=pads,
                              dilations=dilations, ceil_mode=ceil_mode, n_outputs=1)[0]
    tiling = is_grad_enabled() and _tiles(x.shape, kernel_shape, strides, pads, dilations)
    return y, (y.copy() if tiling else None)


def _tiled_max_pool_grad(xp, g, x, y, kernel_shape):
    """dL/dx of a tiling MaxPool from its output y: dy goes to each window's first maximum
    (as PyTorch), one tap of every window at a time, no padding or accumulation needed."""
    windows = x.shape[:2] + tuple(d for n, k in zip(x.shape[2:], kernel_shape)
                                  for d in (n // k, k))
    x_windows = x.reshape(windows)
    gx = xp.empty_like(x)
    gx_windows = gx.reshape(windows)
    found = hit = None
    for tap in itertools.product(*(range(k) for k in kernel_shape)):
        at = (slice(None), slice(None)) + tuple(p for t in tap for p in (slice(None), t))
        hit = xp.equal(x_windows[at], y, out=hit)
        if found is None:
            found = hit.copy()
        else:
            xp.greater(hit, found, out=hit)  # a maximum that no earlier tap took
            found |= hit
        xp.multiply(g, hit, out=gx_windows[at])
    return gx


@_max_pool.vjp
def _max_pool_vjp(c, g):
    x = c.arrays[0]
    if c.saved is not None:
        return (_tiled_max_pool_grad(array_module(g), g, x, c.saved, c.attrs["kernel_shape"]),)
    return (pool_kernels.max_pool_grad(array_module(g), g, x, **c.attrs),)


@primitive("avg_pool", onnx=Onnx("AveragePool", {
    **_POOL_ATTRS, "count_include_pad": Attr("count_include_pad")}), saves_inputs=False)
def _avg_pool(xp, x, *, kernel_shape, strides, pads, ceil_mode, count_include_pad):
    return pool_kernels.average_pool(xp, x, kernel_shape=kernel_shape, strides=strides,
                                     pads=pads, ceil_mode=ceil_mode,
                                     count_include_pad=count_include_pad)[0]


@_avg_pool.vjp
def _avg_pool_vjp(c, g):
    return (pool_kernels.average_pool_grad(np, g, c.arrays[0].shape, **c.attrs),)


def _bins(size, out):
    """PyTorch's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


@primitive("adaptive_avg_pool2d", onnx=None, saves_inputs=False)
def _adaptive_avg_pool2d(xp, x, output_size):
    """Only for sizes that do not divide evenly (those lower to AveragePool / GlobalAveragePool)."""
    rows, cols = _bins(x.shape[-2], output_size[0]), _bins(x.shape[-1], output_size[1])
    out = xp.empty(x.shape[:-2] + tuple(output_size), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[..., i, j] = x[..., r0:r1, c0:c1].mean(axis=(-2, -1))
    return out


@_adaptive_avg_pool2d.vjp
def _adaptive_avg_pool2d_vjp(c, g):
    x_shape, output_size = c.arrays[0].shape, c.attrs["output_size"]
    gx = array_module(g).zeros(x_shape, dtype=g.dtype)
    for i, (r0, r1) in enumerate(_bins(x_shape[-2], output_size[0])):
        for j, (c0, c1) in enumerate(_bins(x_shape[-1], output_size[1])):
            gx[..., r0:r1, c0:c1] += (g[..., i, j] / ((r1 - r0) * (c1 - c0)))[..., None, None]
    return (gx,)


# ---- normalization -------------------------------------------------------------------------
def _channel_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _affine_grads(c, g, x_hat, axes):
    """Gradients of weight and bias (per channel / per normalized element)."""
    gw = (g * x_hat).sum(axis=axes) if c.needs_input_grad[1] else None
    gb = g.sum(axis=axes) if len(c.arrays) > 2 and c.arrays[2] is not None and \
        c.needs_input_grad[2] else None
    return gw, gb


@primitive("batch_norm", onnx=Onnx("BatchNormalization", {"epsilon": Attr("eps")}))
def _batch_norm(xp, x, weight, bias, running_mean, running_var, *, eps):
    """Inference form: normalise with the running statistics."""
    channels = x.shape[1]
    ones, zeros = xp.ones(channels, x.dtype), xp.zeros(channels, x.dtype)
    return norm_kernels.batch_normalization(
        xp, x, ones if weight is None else weight, zeros if bias is None else bias,
        running_mean, running_var, epsilon=eps)[0]


@_batch_norm.vjp
def _batch_norm_vjp(c, g):
    x, weight, bias, mean, var = c.arrays
    shape = _channel_shape(x)
    inv_std = (1 / array_module(g).sqrt(var + c.attrs["eps"])).astype(x.dtype).reshape(shape)
    axes = (0,) + tuple(range(2, x.ndim))
    scale = inv_std if weight is None else inv_std * weight.reshape(shape)
    gx = g * scale if c.needs_input_grad[0] else None
    gw, gb = _affine_grads(c, g, (x - mean.reshape(shape)) * inv_std, axes) \
        if weight is not None else (None, None)
    if weight is None and bias is not None and c.needs_input_grad[2]:
        gb = g.sum(axis=axes)
    return gx, gw, gb, None, None


@primitive("batch_norm_train", onnx=Onnx("BatchNormalization", {
    "epsilon": Attr("eps"), "training_mode": 1}, since=14), n_outputs=3, stash=True)
def _batch_norm_train(xp, x, weight, bias, *, eps):
    """Training form: normalise with the batch statistics. Outputs (y, batch mean, biased
    batch var) (the caller updates running statistics from them); stashes (x_hat, inv_std)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = _channel_shape(x)
    mean = x.mean(axis=axes, keepdims=True)
    x_hat = x - mean
    # the squares go to the output's buffer, which is overwritten below
    y = xp.multiply(x_hat, x_hat)
    var = y.mean(axis=axes, keepdims=True)
    inv_std = 1 / xp.sqrt(var + eps)
    x_hat *= inv_std
    if weight is None:
        y[...] = x_hat
    else:
        xp.multiply(x_hat, weight.reshape(shape), out=y)
    if bias is not None:
        y += bias.reshape(shape)
    return (y, mean.reshape(-1), var.reshape(-1)), (x_hat, inv_std)


@_batch_norm_train.vjp
def _batch_norm_train_vjp(c, g, _g_mean, _g_var):
    x, weight, bias = c.arrays
    x_hat, inv_std = c.saved
    xp = array_module(g)
    axes = (0,) + tuple(range(2, x.ndim))
    count = x.size // x.shape[1]
    # per channel, sum(g * w * x_hat) = w * sum(g * x_hat) and sum(g * w) = w * sum(g): the
    # sums the affine gradients need also give gx, with two full-size arrays instead of seven
    scratch = xp.multiply(g, x_hat)
    g_x_hat_sum = scratch.sum(axis=axes, keepdims=True)
    g_sum = g.sum(axis=axes, keepdims=True)
    gx = None
    if c.needs_input_grad[0]:
        scale = inv_std if weight is None else inv_std * weight.reshape(_channel_shape(x))
        gx = xp.multiply(g, scale)
        gx -= xp.multiply(x_hat, scale * g_x_hat_sum / count, out=scratch)
        gx -= scale * g_sum / count
    gw = g_x_hat_sum.reshape(-1) if weight is not None and c.needs_input_grad[1] else None
    gb = g_sum.reshape(-1) if bias is not None and c.needs_input_grad[2] else None
    return gx, gw, gb


@primitive("layer_norm", onnx=Onnx("LayerNormalization", {
    "axis": Attr("axis"), "epsilon": Attr("eps")}, since=17), stash=True)
def _layer_norm(xp, x, weight, bias, *, axis, eps):
    scale = weight if weight is not None else xp.ones(x.shape[axis:], x.dtype)
    y, mean, inv_std = norm_kernels.layer_normalization(xp, x, scale, bias, axis=axis,
                                                         epsilon=eps)
    return y, (mean, inv_std)


@_layer_norm.vjp
def _layer_norm_vjp(c, g):
    x, weight, bias = c.arrays
    mean, inv_std = c.saved
    axis = c.attrs["axis"]
    normalized = tuple(range(axis, x.ndim))
    leading = tuple(range(axis))
    x_hat = ((x - mean) * inv_std).astype(x.dtype)
    inv_std = inv_std.astype(x.dtype)
    gx = None
    if c.needs_input_grad[0]:
        g_hat = g if weight is None else g * weight
        gx = inv_std * (g_hat - g_hat.mean(axis=normalized, keepdims=True)
                        - x_hat * (g_hat * x_hat).mean(axis=normalized, keepdims=True))
    gw = (g * x_hat).sum(axis=leading) if weight is not None and c.needs_input_grad[1] else None
    gb = g.sum(axis=leading) if bias is not None and c.needs_input_grad[2] else None
    return gx, gw, gb


@primitive("group_norm", onnx=Onnx("GroupNormalization", {
    "num_groups": Attr("num_groups"), "epsilon": Attr("eps")}, since=21), stash=True)
def _group_norm(xp, x, weight, bias, *, num_groups, eps):
    n = x.shape[0]
    grouped = x.reshape(n, num_groups, -1)
    mean = grouped.mean(axis=-1, keepdims=True)
    centered = grouped - mean
    inv_std = 1 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    x_hat = (centered * inv_std).reshape(x.shape)
    shape = _channel_shape(x)
    y = x_hat if weight is None else x_hat * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y, (x_hat, inv_std)


@_group_norm.vjp
def _group_norm_vjp(c, g):
    x, weight, bias = c.arrays
    x_hat, inv_std = c.saved
    n, groups = x.shape[0], c.attrs["num_groups"]
    axes = (0,) + tuple(range(2, x.ndim))
    gx = None
    if c.needs_input_grad[0]:
        g_hat = (g if weight is None else g * weight.reshape(_channel_shape(x))).reshape(
            n, groups, -1)
        h = x_hat.reshape(n, groups, -1)
        gx = (inv_std * (g_hat - g_hat.mean(axis=-1, keepdims=True)
                         - h * (g_hat * h).mean(axis=-1, keepdims=True))).reshape(x.shape)
    gw = (g * x_hat).sum(axis=axes) if weight is not None and c.needs_input_grad[1] else None
    gb = g.sum(axis=axes) if bias is not None and c.needs_input_grad[2] else None
    return gx, gw, gb


# ---- dropout -------------------------------------------------------------------------------
@primitive("dropout", onnx=Onnx("Dropout", inputs_from_attrs=("p",), since=12), stash=True,
           saves_inputs=False)
def _dropout(xp, x, *, p):
    """Training-mode dropout; the keep-mask comes from the global generator (mk.manual_seed)."""
    if xp is np:
        keep = numpy_generator().random(x.shape, dtype=np.float32) >= p
    else:
        from modelkit.authoring import cuda
        keep = cuda.random_state(x.device.id).random_sample(x.shape, dtype=np.float32) >= p
    scale = keep * x.dtype.type(1 / (1 - p))
    return x * scale, scale


@_dropout.vjp
def _dropout_vjp(c, g):
    return (g * c.saved,)


# ---- ONNX lowerings (`g`: the exporter's emitter) -------------------------------------------
@_adaptive_avg_pool2d.lowering
def _adaptive_avg_pool2d_onnx(g, x, output_size):
    """Uneven bins are rectangles, so the pooling is separable: two MatMuls with averaging
    matrices, rows (out_h, H) @ x @ cols (W, out_w)."""
    height, width = g.shape(x)[-2:]
    dtype = g.dtype(x)

    def averaging(size, out):
        matrix = np.zeros((out, size), dtype)
        for i, (start, stop) in enumerate(_bins(size, out)):
            matrix[i, start:stop] = 1 / (stop - start)
        return matrix

    pooled = g.op("MatMul", x, g.const(averaging(width, output_size[1]).T.copy()))
    return g.op("MatMul", g.const(averaging(height, output_size[0])), pooled)


@_batch_norm.lowering
def _batch_norm_onnx(g, x, weight, bias, running_mean, running_var, *, eps):
    channels, dtype = g.shape(x)[1], g.dtype(x)
    weight = weight if weight is not None else g.const(np.ones(channels, dtype))
    bias = bias if bias is not None else g.const(np.zeros(channels, dtype))
    return g.op("BatchNormalization", x, weight, bias, running_mean, running_var, epsilon=eps)


@_layer_norm.lowering
def _layer_norm_onnx(g, x, weight, bias, *, axis, eps):
    if g.spec is None:  # before opset 17: mean and variance over the trailing dims
        return _layer_norm_decomposed(g, x, weight, bias, axis, eps)
    if weight is None:  # LayerNormalization's Scale is required
        weight = g.const(np.ones(g.shape(x)[axis:], g.dtype(x)))
    return g.op("LayerNormalization", x, weight, bias, axis=axis, epsilon=eps)


def _layer_norm_decomposed(g, x, weight, bias, axis, eps):
    axes = list(range(axis, len(g.shape(x))))
    mean = g.op("ReduceMean", x, axes=axes, keepdims=1)
    centered = g.op("Sub", x, mean)
    var = g.op("ReduceMean", g.op("Mul", centered, centered), axes=axes, keepdims=1)
    y = g.op("Div", centered, g.op("Sqrt", g.op("Add", var, g.const(eps, g.dtype(x)))))
    y = y if weight is None else g.op("Mul", y, weight)
    return y if bias is None else g.op("Add", y, bias)


@_group_norm.lowering
def _group_norm_onnx(g, x, weight, bias, *, num_groups, eps):
    if g.spec is not None:
        return g.emit_spec()
    dtype, rank = g.dtype(x), len(g.shape(x))
    # statistics per (sample, group): reshape to (N, G, -1); 0 copies the (maybe dynamic) N
    grouped = g.op("Reshape", x, g.ints([0, num_groups, -1]))
    reduce_axes = {"axes": [2]} if g.opset < 18 else {}
    axes_input = (g.ints([2]),) if g.opset >= 18 else ()
    mean = g.op("ReduceMean", grouped, *axes_input, keepdims=1, **reduce_axes)
    centered = g.op("Sub", grouped, mean)
    var = g.op("ReduceMean", g.op("Mul", centered, centered), *axes_input, keepdims=1,
               **reduce_axes)
    normalized = g.op("Div", centered, g.op("Sqrt", g.op("Add", var, g.const(eps, dtype))))
    y = g.op("Reshape", normalized, g.op("Shape", x))
    channel_shape = g.ints([-1] + [1] * (rank - 2))
    if weight is not None:
        y = g.op("Mul", y, g.op("Reshape", weight, channel_shape))
    if bias is not None:
        y = g.op("Add", y, g.op("Reshape", bias, channel_shape))
    return y
