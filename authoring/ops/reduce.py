"""Reduction primitives (sum, mean, amax, amin, prod, logsumexp, argmax, argmin, cumsum) and
the public reductions built on them (max/min with a dim, var, std).

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.tensor([[1.0, 5.0], [3.0, 2.0]])
    >>> x.sum(dim=0), x.max(dim=1).indices
    (tensor([4., 7.]), tensor([1, 0]))
"""

from __future__ import annotations

import builtins
import collections
import numbers

import numpy as np

from modelkit.authoring import dtypes
from modelkit.authoring.device import array_module
from modelkit.authoring.ops.common import cast, check_dim, dims
from modelkit.authoring.ops.registry import OPS, Attr, Onnx, apply, primitive
from modelkit.authoring.tensor import Tensor


def _expand_back(c, g):
    """`g` with the reduced axes re-inserted (size 1), ready to broadcast against the input."""
    axes = c.attrs["dim"]
    if not c.attrs["keepdim"]:
        g = array_module(g).expand_dims(g, axes if axes is not None else tuple(range(c.arrays[0].ndim)))
    return g


def _reduce_onnx(op_type, axes_as_input_since=18):
    """ReduceX with `axes` as an attribute, then as an input (ReduceSum from 13, others 18)."""
    return (Onnx(op_type, {"axes": Attr("dim"), "keepdims": Attr("keepdim")}),
            Onnx(op_type, {"keepdims": Attr("keepdim")}, inputs_from_attrs=("dim",),
                 since=axes_as_input_since))


@primitive("sum", onnx=_reduce_onnx("ReduceSum", 13), saves_inputs=False)
def _sum(xp, x, dim, keepdim):
    return xp.sum(x, axis=dim, keepdims=keepdim)


@_sum.vjp
def _sum_vjp(c, g):
    return (array_module(g).broadcast_to(_expand_back(c, g), c.arrays[0].shape),)


@primitive("mean", onnx=_reduce_onnx("ReduceMean"), saves_inputs=False)
def _mean(xp, x, dim, keepdim):
    return xp.mean(x, axis=dim, keepdims=keepdim)


@_mean.vjp
def _mean_vjp(c, g):
    x = c.arrays[0]
    count = x.size // builtins.max(c.out.size, 1) if x.size else 1
    return (array_module(g).broadcast_to(_expand_back(c, g) / count, x.shape),)


def _extreme_vjp(c, g):
    """Gradient of amax/amin: shared evenly among the tied extreme elements (as PyTorch)."""
    x = c.arrays[0]
    out = _expand_back(c, c.out)
    mask = (x == out)
    count = mask.sum(axis=c.attrs["dim"], keepdims=True)
    return (mask * (_expand_back(c, g) / count).astype(g.dtype),)


primitive("amax", onnx=_reduce_onnx("ReduceMax"), saves_output=True)(
    lambda xp, x, dim, keepdim: xp.max(x, axis=dim, keepdims=keepdim)).vjp(_extreme_vjp)
primitive("amin", onnx=_reduce_onnx("ReduceMin"), saves_output=True)(
    lambda xp, x, dim, keepdim: xp.min(x, axis=dim, keepdims=keepdim)).vjp(_extreme_vjp)


@primitive("prod", onnx=_reduce_onnx("ReduceProd"))
def _prod(xp, x, dim, keepdim):
    return xp.prod(x, axis=dim, keepdims=keepdim)


@_prod.vjp
def _prod_vjp(c, g):
    # product of all *other* elements = exclusive cumprod from the left * from the right;
    # exact with zeros, unlike out / x
    x, axes, xp = c.arrays[0], c.attrs["dim"], array_module(g)
    moved = x.reshape(-1) if axes is None else xp.moveaxis(x, axes[0], -1)
    ones = xp.ones(moved.shape[:-1] + (1,), dtype=x.dtype)
    left = xp.cumprod(xp.concatenate([ones, moved[..., :-1]], axis=-1), axis=-1)
    right = xp.cumprod(xp.concatenate([ones, moved[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    others = left * right
    others = others.reshape(x.shape) if axes is None else xp.moveaxis(others, -1, axes[0])
    return (others * _expand_back(c, g),)


@primitive("logsumexp", onnx=_reduce_onnx("ReduceLogSumExp"), saves_output=True)
def _logsumexp(xp, x, dim, keepdim):
    peak = xp.max(x, axis=dim, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, 0)
    total = xp.log(xp.sum(xp.exp(x - peak), axis=dim, keepdims=True)) + peak
    return total if keepdim else xp.squeeze(total, axis=dim)


@_logsumexp.vjp
def _logsumexp_vjp(c, g):
    return (_expand_back(c, g) * array_module(g).exp(c.arrays[0] - _expand_back(c, c.out)),)


@primitive("cumsum", onnx=Onnx("CumSum", inputs_from_attrs=("dim",), since=11),
           saves_inputs=False)
def _cumsum(xp, x, dim):
    return xp.cumsum(x, axis=dim)


@_cumsum.vjp
def _cumsum_vjp(c, g):
    d, xp = c.attrs["dim"], array_module(g)
    return (xp.flip(xp.cumsum(xp.flip(g, d), axis=d), d),)


def _arg_extreme(np_fn):
    def forward(xp, x, dim, keepdim):
        if dim is None:
            result = np_fn(x.reshape(-1))
            return xp.reshape(result, (1,) * x.ndim) if keepdim else result
        return np_fn(x, axis=dim, keepdims=keepdim)
    return forward


_ARG_ONNX = {"axis": Attr("dim"), "keepdims": Attr("keepdim")}
primitive("argmax", onnx=Onnx("ArgMax", _ARG_ONNX))(_arg_extreme(np.argmax))
primitive("argmin", onnx=Onnx("ArgMin", _ARG_ONNX))(_arg_extreme(np.argmin))


# ---- public functions ----------------------------------------------------------------------
def _reduce(name, input, dim, keepdim):  # noqa: A002
    return apply(OPS[name], input, dim=dims(dim, input.array.ndim), keepdim=bool(keepdim))


def sum(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A001, A002
    """Sum over `dim` (an int, a tuple, or None for all); bool/int inputs sum to int64.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.sum(mk.ones(2, 3), dim=1)
        tensor([3., 3.])
    """
    if dtype is not None:
        input = cast(input, dtypes.from_any(dtype).numpy)
    elif input.array.dtype.kind in "biu":
        input = cast(input, np.dtype(np.int64))
    return _reduce("sum", input, dim, keepdim)


def mean(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A002
    """Mean over `dim`; floating inputs only (as in PyTorch).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.mean(mk.tensor([1.0, 2.0]))
        tensor(1.5000)
    """
    if dtype is not None:
        input = cast(input, dtypes.from_any(dtype).numpy)
    if input.array.dtype.kind != "f":
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {input.dtype}")
    return _reduce("mean", input, dim, keepdim)


def amax(input, dim=(), keepdim=False):  # noqa: A002
    """Maximum over `dim` (all dims by default); the gradient is shared among ties.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.amax(mk.tensor([[1.0, 3.0]]), dim=1)
        tensor([3.])
    """
    return _reduce("amax", input, None if dim == () else dim, keepdim)


def amin(input, dim=(), keepdim=False):  # noqa: A002
    """Minimum over `dim` (all dims by default).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.amin(mk.tensor([[1.0, 3.0]]), dim=1)
        tensor([1.])
    """
    return _reduce("amin", input, None if dim == () else dim, keepdim)


def prod(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A002
    """Product over one `dim` or all elements.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.prod(mk.tensor([2.0, 3.0]))
        tensor(6.)
    """
    if dtype is not None:
        input = cast(input, dtypes.from_any(dtype).numpy)
    if dim is not None and not isinstance(dim, numbers.Integral):
        raise TypeError(f"prod: dim must be an int, got {dim!r}")
    return _reduce("prod", input, dim, keepdim)


def logsumexp(input, dim, keepdim=False):  # noqa: A002
    """log(sum(exp(input), dim)), computed without overflow.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.logsumexp(mk.zeros(2), dim=0)
        tensor(0.6931)
    """
    return _reduce("logsumexp", input, dim, keepdim)


def cumsum(input, dim, *, dtype=None):  # noqa: A002
    """Running sum along `dim`.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.cumsum(mk.tensor([1.0, 2.0, 3.0]), dim=0)
        tensor([1., 3., 6.])
    """
    if dtype is not None:
        input = cast(input, dtypes.from_any(dtype).numpy)
    elif input.array.dtype.kind in "biu":
        input = cast(input, np.dtype(np.int64))
    return apply(OPS["cumsum"], input, dim=check_dim(dim, input.array.ndim))


def argmax(input, dim=None, keepdim=False):  # noqa: A002
    """Index of the maximum (first one on ties) along `dim`, or in the flattened tensor.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.argmax(mk.tensor([1.0, 5.0, 5.0]))
        tensor(1)
    """
    d = None if dim is None else check_dim(dim, input.array.ndim)
    return apply(OPS["argmax"], input, dim=d, keepdim=bool(keepdim))


def argmin(input, dim=None, keepdim=False):  # noqa: A002
    """Index of the minimum (first one on ties) along `dim`, or in the flattened tensor.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.argmin(mk.tensor([3.0, 1.0]))
        tensor(1)
    """
    d = None if dim is None else check_dim(dim, input.array.ndim)
    return apply(OPS["argmin"], input, dim=d, keepdim=bool(keepdim))


MinMax = collections.namedtuple("MinMax", ["values", "indices"])


def max(input, dim=None, keepdim=False):  # noqa: A001, A002
    """max(x): the largest element; max(x, dim): (values, indices); max(x, other): maximum.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.max(mk.tensor([[1.0, 4.0]]), dim=1)
        MinMax(values=tensor([4.]), indices=tensor([1]))
    """
    if isinstance(dim, Tensor):
        from modelkit.authoring.ops.elementwise import maximum
        return maximum(input, dim)
    if dim is None:
        return amax(input)
    return MinMax(amax(input, dim, keepdim), argmax(input, dim, keepdim))


def min(input, dim=None, keepdim=False):  # noqa: A001, A002
    """min(x): the smallest element; min(x, dim): (values, indices); min(x, other): minimum.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.min(mk.tensor([[1.0, 4.0]]), dim=1).values
        tensor([1.])
    """
    if isinstance(dim, Tensor):
        from modelkit.authoring.ops.elementwise import minimum
        return minimum(input, dim)
    if dim is None:
        return amin(input)
    return MinMax(amin(input, dim, keepdim), argmin(input, dim, keepdim))


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):  # noqa: A002
    """Variance over `dim` with Bessel's correction by default (correction=1).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.var(mk.tensor([1.0, 2.0, 3.0]))
        tensor(1.)
    """
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    axes = dims(dim, input.array.ndim)
    count = input.array.size if axes is None else int(np.prod([input.array.shape[a]
                                                               for a in axes]))
    centered = input - mean(input, axes, keepdim=True)
    return sum(centered * centered, axes, keepdim) / builtins.max(count - correction, 0)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):  # noqa: A002
    """Standard deviation: sqrt(var(...)).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.std(mk.tensor([1.0, 3.0]))
        tensor(1.4142)
    """
    return var(input, dim, unbiased, keepdim, correction=correction).sqrt()


primitive("all", onnx=None)(lambda xp, x, dim, keepdim: xp.all(x, axis=dim, keepdims=keepdim))
primitive("any", onnx=None)(lambda xp, x, dim, keepdim: xp.any(x, axis=dim, keepdims=keepdim))


def all(input, dim=None, keepdim=False):  # noqa: A001, A002
    """True where every element (along `dim`) is non-zero.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.all(mk.tensor([True, False]))
        tensor(False)
    """
    return _reduce("all", input, dim, keepdim)


def any(input, dim=None, keepdim=False):  # noqa: A001, A002
    """True where some element (along `dim`) is non-zero.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.any(mk.tensor([True, False]))
        tensor(True)
    """
    return _reduce("any", input, dim, keepdim)


# ---- ONNX lowerings (`g`: the exporter's emitter) -------------------------------------------
def _bool_reduce_onnx(reduce_op):
    def lower(g, x, dim, keepdim):
        # ONNX has no ReduceAll/ReduceAny: min/max over 0/1 integers, then back to bool
        flags = g.op("Cast", g.op("Cast", x, to=g.onnx_dtype(np.bool_)),
                     to=g.onnx_dtype(np.int32))
        axes = None if dim is None else g.ints(dim)
        if g.opset >= 18:
            reduced = g.op(reduce_op, flags, axes, keepdims=int(keepdim))
        else:
            reduced = g.op(reduce_op, flags, axes=None if dim is None else list(dim),
                           keepdims=int(keepdim))
        return g.op("Cast", reduced, to=g.onnx_dtype(np.bool_))
    return lower


OPS["all"].lowering(_bool_reduce_onnx("ReduceMin"))
OPS["any"].lowering(_bool_reduce_onnx("ReduceMax"))


def _arg_extreme_onnx(g, x, dim, keepdim):
    if dim is not None:
        return g.emit_spec()
    # over the flattened tensor, then shaped as numpy/PyTorch give it (0-d, or all-ones dims)
    flat = g.op("Reshape", x, g.ints([-1]))
    index = g.op(g.spec.op_type, flat, axis=0, keepdims=1)
    return g.op("Reshape", index, g.ints([1] * len(g.shape(x)) if keepdim else []))


OPS["argmax"].lowering(_arg_extreme_onnx)
OPS["argmin"].lowering(_arg_extreme_onnx)
