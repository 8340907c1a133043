"""`mk.nn.functional` (import as F): activations, softmax, convolution, pooling,
normalization, dropout, embedding, one_hot, pad: torch.nn.functional's names and arguments,
each a call into the op registry.

Example:
    >>> import modelkit.authoring as mk
    >>> import modelkit.authoring.nn.functional as F
    >>> F.conv2d(mk.ones(1, 3, 8, 8), mk.ones(4, 3, 3, 3), padding="same").shape
    modelkit.Size([1, 4, 8, 8])
"""

from __future__ import annotations

import numbers

from modelkit.authoring.errors import DTypeError, ShapeError
from modelkit.authoring.grad_mode import no_grad
from modelkit.authoring.ops.common import check_dim
from modelkit.authoring.ops.elementwise import (  # noqa: F401  (re-exported F.* names)
    gelu,
    leaky_relu,
    relu,
    sigmoid,
    silu,
    softplus,
    tanh,
)
from modelkit.authoring.ops.indexing import embedding as _embedding
from modelkit.authoring.ops.indexing import one_hot  # noqa: F401
from modelkit.authoring.ops import nn as _nn_ops  # noqa: F401  (registers the nn primitives)
from modelkit.authoring.ops.linalg import linear  # noqa: F401
from modelkit.authoring.ops.registry import OPS, apply
from modelkit.authoring.ops.shape import pad  # noqa: F401


def _tuple(value, n, name):
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value}")
    return value


def softmax(input, dim=None, dtype=None):  # noqa: A002
    """exp(x) / sum(exp(x)) along `dim`.

    Example:
        >>> import modelkit.authoring as mk
        >>> softmax(mk.zeros(2), dim=0)
        tensor([0.5000, 0.5000])
    """
    return apply(OPS["softmax"], _softmax_input(input, dim, dtype), dim=_softmax_dim(input, dim))


def log_softmax(input, dim=None, dtype=None):  # noqa: A002
    """log(softmax(x)) along `dim`, computed stably.

    Example:
        >>> import modelkit.authoring as mk
        >>> log_softmax(mk.zeros(2), dim=0)
        tensor([-0.6931, -0.6931])
    """
    return apply(OPS["log_softmax"], _softmax_input(input, dim, dtype),
                 dim=_softmax_dim(input, dim))


def _softmax_input(input, dim, dtype):  # noqa: A002
    if dtype is not None:
        input = input.to(dtype)
    if input.array.dtype.kind != "f":
        raise DTypeError(f"softmax: expected a floating point input, got {input.dtype}")
    return input


def _softmax_dim(input, dim):  # noqa: A002
    if dim is None:
        raise TypeError("softmax/log_softmax: pass dim= explicitly (PyTorch's implicit choice "
                        "of dim is deprecated)")
    return check_dim(dim, input.array.ndim)


# ---- convolution ---------------------------------------------------------------------------
def _conv_pads(padding, kernel, dilation, stride, op):
    n = len(kernel)
    if padding == "valid":
        return (0,) * (2 * n)
    if padding == "same":
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                             f"(stride={stride})")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        # PyTorch puts the odd extra pad at the end
        return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a tuple, got "
                         f"{padding!r}")
    pads = _tuple(padding, n, "padding")
    return pads + pads


def _check_conv(op, input, weight, bias, groups, spatial):  # noqa: A002
    if input.array.ndim != spatial + 2:
        raise ShapeError(f"{op}: expected {spatial + 1}-D (unbatched) or {spatial + 2}-D "
                         f"(batched) input, got input of shape {tuple(input.shape)}")
    if weight.array.ndim != spatial + 2:
        raise ShapeError(f"{op}: expected {spatial + 2}-D weight, got weight of shape "
                         f"{tuple(weight.shape)}")
    if input.array.dtype != weight.array.dtype:
        raise DTypeError(f"{op}: input dtype {input.dtype} and weight dtype {weight.dtype} "
                         f"differ (input shape {tuple(input.shape)}, weight shape "
                         f"{tuple(weight.shape)})")
    if bias is not None and bias.array.ndim != 1:
        raise ShapeError(f"{op}: bias must be 1-D, got shape {tuple(bias.shape)}")
    if groups < 1 or input.array.shape[1] % groups:
        raise ShapeError(f"{op}: input channels ({input.array.shape[1]}) must be divisible by "
                         f"groups ({groups}); input shape {tuple(input.shape)}")


def _conv(op, spatial, input, weight, bias, stride, padding, dilation, groups):  # noqa: A002
    if input.array.ndim == spatial + 1:  # unbatched (C, *spatial), as PyTorch accepts
        return _conv(op, spatial, input.unsqueeze(0), weight, bias, stride, padding, dilation,
                     groups).squeeze(0)
    _check_conv(op, input, weight, bias, groups, spatial)
    kernel = weight.array.shape[2:]
    stride, dilation = _tuple(stride, spatial, "stride"), _tuple(dilation, spatial, "dilation")
    if weight.array.shape[1] * groups != input.array.shape[1]:
        raise ShapeError(f"{op}: Given groups={groups}, weight of size {list(weight.shape)}, "
                         f"expected input{list(input.shape)} to have "
                         f"{weight.array.shape[1] * groups} channels, but got "
                         f"{input.array.shape[1]} channels instead")
    if bias is not None and bias.array.shape[0] != weight.array.shape[0]:
        raise ShapeError(f"{op}: bias has {bias.array.shape[0]} elements, expected "
                         f"{weight.array.shape[0]} (weight shape {tuple(weight.shape)})")
    pads = _conv_pads(padding, kernel, dilation, stride, op)
    for d in range(spatial):
        extent = input.array.shape[2 + d] + pads[d] + pads[d + spatial]
        if extent < dilation[d] * (kernel[d] - 1) + 1:
            raise ShapeError(f"{op}: kernel size {tuple(kernel)} (dilation {dilation}) can't be "
                             f"greater than the padded input size at spatial dim {d} (input "
                             f"shape {tuple(input.shape)}, padding {padding})")
    return apply(OPS["conv"], input, weight, bias, strides=stride, pads=pads,
                 dilations=dilation, group=int(groups))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """1-D convolution over (N, C_in, L) with weight (C_out, C_in/groups, k).

    Example:
        >>> import modelkit.authoring as mk
        >>> conv1d(mk.ones(1, 2, 5), mk.ones(3, 2, 3)).shape
        modelkit.Size([1, 3, 3])
    """
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """2-D convolution over (N, C_in, H, W) with weight (C_out, C_in/groups, kH, kW); padding
    may be an int, a pair, "valid" or "same".

    Example:
        >>> import modelkit.authoring as mk
        >>> conv2d(mk.ones(1, 2, 5, 5), mk.ones(3, 2, 3, 3), stride=2).shape
        modelkit.Size([1, 3, 2, 2])
    """
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0,  # noqa: A002
                     output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution; weight (C_in, C_out/groups, kH, kW) as in PyTorch.

    Example:
        >>> import modelkit.authoring as mk
        >>> conv_transpose2d(mk.ones(1, 2, 3, 3), mk.ones(2, 4, 3, 3), stride=2).shape
        modelkit.Size([1, 4, 7, 7])
    """
    _check_conv("conv_transpose2d", input, weight, bias, groups, 2)
    if weight.array.shape[0] != input.array.shape[1]:
        raise ShapeError(f"conv_transpose2d: weight of shape {tuple(weight.shape)} expects "
                         f"{weight.array.shape[0]} input channels, got input of shape "
                         f"{tuple(input.shape)}")
    stride, dilation = _tuple(stride, 2, "stride"), _tuple(dilation, 2, "dilation")
    output_padding = _tuple(output_padding, 2, "output_padding")
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller "
                         f"than either stride {stride} or dilation {dilation}")
    pads = _tuple(padding, 2, "padding") * 2
    return apply(OPS["conv_transpose"], input, weight, bias, strides=stride, pads=pads,
                 dilations=dilation, group=int(groups), output_padding=output_padding)


# ---- pooling -------------------------------------------------------------------------------
def _pool_geometry(op, input, kernel_size, stride, padding):  # noqa: A002
    if input.array.ndim not in (3, 4):
        raise ShapeError(f"{op}: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    kernel = _tuple(kernel_size, 2, "kernel_size")
    stride = kernel if stride is None or stride == () or stride == [] else \
        _tuple(stride, 2, "stride")
    pads = _tuple(padding, 2, "padding")
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got "
                         f"pad={pads}, kernel_size={kernel}")
    return kernel, stride, pads + pads


def _batched(fn, input):  # noqa: A002
    """Run a 4-D pooling op on an unbatched 3-D input too."""
    if input.array.ndim == 3:
        return fn(input.unsqueeze(0)).squeeze(0)
    return fn(input)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1,  # noqa: A002
               ceil_mode=False, return_indices=False):
    """Max over kH x kW windows (stride defaults to kernel_size).

    Example:
        >>> import modelkit.authoring as mk
        >>> max_pool2d(mk.arange(16.0).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    if return_indices:
        raise NotImplementedError("max_pool2d(return_indices=True) is not supported yet")
    kernel, stride, pads = _pool_geometry("max_pool2d", input, kernel_size, stride, padding)
    dilation = _tuple(dilation, 2, "dilation")
    return _batched(lambda x: apply(OPS["max_pool"], x, kernel_shape=kernel, strides=stride,
                                    pads=pads, dilations=dilation, ceil_mode=int(ceil_mode)),
                    input)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,  # noqa: A002
               count_include_pad=True, divisor_override=None):
    """Mean over kH x kW windows; count_include_pad=True (PyTorch's default) counts padding.

    Example:
        >>> import modelkit.authoring as mk
        >>> avg_pool2d(mk.ones(1, 1, 4, 4), 2).shape
        modelkit.Size([1, 1, 2, 2])
    """
    if divisor_override is not None:
        raise NotImplementedError("avg_pool2d(divisor_override=...) is not supported yet")
    kernel, stride, pads = _pool_geometry("avg_pool2d", input, kernel_size, stride, padding)
    return _batched(lambda x: apply(OPS["avg_pool"], x, kernel_shape=kernel, strides=stride,
                                    pads=pads, ceil_mode=int(ceil_mode),
                                    count_include_pad=int(count_include_pad)), input)


def adaptive_avg_pool2d(input, output_size):  # noqa: A002
    """Average pooling to a fixed (H_out, W_out) whatever the input size (None keeps a dim).

    Example:
        >>> import modelkit.authoring as mk
        >>> adaptive_avg_pool2d(mk.ones(2, 3, 7, 5), 1).shape
        modelkit.Size([2, 3, 1, 1])
    """
    if input.array.ndim not in (3, 4):
        raise ShapeError(f"adaptive_avg_pool2d: expected 3-D or 4-D input, got shape "
                         f"{tuple(input.shape)}")
    size = (output_size, output_size) if isinstance(output_size, numbers.Integral) or \
        output_size is None else tuple(output_size)
    height, width = input.array.shape[-2:]
    out = (height if size[0] is None else int(size[0]), width if size[1] is None else int(size[1]))
    if height % out[0] == 0 and width % out[1] == 0:
        kernel = (height // out[0], width // out[1])
        return avg_pool2d(input, kernel, kernel)
    return apply(OPS["adaptive_avg_pool2d"], input, output_size=out)


# ---- normalization -------------------------------------------------------------------------
def batch_norm(input, running_mean, running_var, weight=None, bias=None,  # noqa: A002
               training=False, momentum=0.1, eps=1e-5):
    """Batch normalization over dim 1. In training, normalises with the batch statistics and
    updates running_mean / running_var in place (unbiased variance, as PyTorch).

    Example:
        >>> import modelkit.authoring as mk
        >>> mean, var = mk.zeros(2), mk.ones(2)
        >>> y = batch_norm(mk.randn(4, 2), mean, var, training=True)
        >>> bool((mean != 0).any())
        True
    """
    if input.array.ndim < 2:
        raise ShapeError(f"batch_norm: expected at least 2-D input (N, C, ...), got shape "
                         f"{tuple(input.shape)}")
    channels = input.array.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ShapeError(f"batch_norm: {name} should have shape ({channels},) for input of "
                             f"shape {tuple(input.shape)}, got {tuple(t.shape)}")
    if not training and running_mean is not None and running_var is not None:
        return apply(OPS["batch_norm"], input, weight, bias, running_mean, running_var,
                     eps=float(eps))
    count = input.array.size // channels
    if training and count <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{list(input.shape)}")
    y, batch_mean, batch_var = apply(OPS["batch_norm_train"], input, weight, bias, eps=float(eps))
    if training and running_mean is not None:
        with no_grad():
            unbiased = batch_var * (count / (count - 1))
            running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype) * momentum)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype) * momentum)
    return y


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: A002
    """Normalise over the trailing `normalized_shape` dims, then scale and shift.

    Example:
        >>> import modelkit.authoring as mk
        >>> layer_norm(mk.tensor([[1.0, 3.0]]), (2,))
        tensor([[-1.0000,  1.0000]])
    """
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) \
        else tuple(normalized_shape)
    n = len(normalized_shape)
    if tuple(input.array.shape[-n:]) != normalized_shape or input.array.ndim < n:
        raise ShapeError(f"layer_norm: input shape {tuple(input.shape)} does not end with "
                         f"normalized_shape {normalized_shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != normalized_shape:
            raise ShapeError(f"layer_norm: {name} should have shape {normalized_shape}, got "
                             f"{tuple(t.shape)}")
    return apply(OPS["layer_norm"], input, weight, bias, axis=input.array.ndim - n,
                 eps=float(eps))


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):  # noqa: A002
    """Normalise each sample over channel groups, then scale and shift per channel.

    Example:
        >>> import modelkit.authoring as mk
        >>> group_norm(mk.randn(2, 4, 3), 2).shape
        modelkit.Size([2, 4, 3])
    """
    channels = input.array.shape[1] if input.array.ndim >= 2 else 0
    if not channels or channels % num_groups:
        raise ShapeError(f"group_norm: Expected number of channels in input to be divisible by "
                         f"num_groups, but got input of shape {tuple(input.shape)} and "
                         f"num_groups={num_groups}")
    return apply(OPS["group_norm"], input, weight, bias, num_groups=int(num_groups),
                 eps=float(eps))


def dropout(input, p=0.5, training=True, inplace=False):  # noqa: A002
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only).

    Example:
        >>> import modelkit.authoring as mk
        >>> dropout(mk.ones(3), 0.5, training=False)
        tensor([1., 1., 1.])
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    return apply(OPS["dropout"], input, p=float(p))


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,  # noqa: A002
              scale_grad_by_freq=False, sparse=False):
    """Rows of `weight` for the integer indices in `input`; padding_idx's row gets no gradient.

    Example:
        >>> import modelkit.authoring as mk
        >>> embedding(mk.tensor([1]), mk.eye(2))
        tensor([[0., 1.]])
    """
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not "
                                  "supported")
    return _embedding(input, weight, padding_idx)


# ---- losses: written in functional_losses.py (nn issue), exposed as F.<loss> like PyTorch ---
from modelkit.authoring.nn.functional_losses import (  # noqa: E402
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
