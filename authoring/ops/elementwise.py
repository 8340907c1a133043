"""Elementwise primitives (arithmetic, unary math, activations, comparisons) and their
public functions. One table row per op: forward, vjp, ONNX lowering.

Example:
    >>> import modelkit.authoring as mk
    >>> mk.add(mk.tensor([1.0, 2.0]), 1, alpha=2)
    tensor([3., 4.])
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.ops.common import binary_operands, cast, scalar_tensor, unbroadcast
from modelkit.authoring.ops.registry import OPS, Attr, Onnx, apply, primitive
from modelkit.authoring.ops.special import erf as _erf
from modelkit.authoring.tensor import Tensor

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_INV_SQRT_2 = 1 / math.sqrt(2)


def _quiet(forward):
    """Run `forward` without numpy's divide/invalid warnings: like PyTorch, log(0) is -inf and
    0/0 is nan silently (detect_anomaly is the tool to find them)."""
    def run(xp, *arrays, **attrs):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return forward(xp, *arrays, **attrs)
    return run


def _needs(c, i):
    return c.needs_input_grad[i]


# ---- binary arithmetic: vjp(ctx, g) -> (grad a, grad b), un-broadcast to each input --------
def _mul_vjp(c, g):
    a, b = c.arrays
    return (unbroadcast(g * b, a.shape) if _needs(c, 0) else None,
            unbroadcast(g * a, b.shape) if _needs(c, 1) else None)


def _div_vjp(c, g):
    a, b = c.arrays
    return (unbroadcast(g / b, a.shape) if _needs(c, 0) else None,
            unbroadcast(-g * c.out / b, b.shape) if _needs(c, 1) else None)


def _pow_vjp(c, g):
    a, b = c.arrays
    xp = array_module(g)
    ga = unbroadcast(g * b * xp.power(a, b - 1), a.shape) if _needs(c, 0) else None
    gb = None
    if _needs(c, 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0).astype(a.dtype)
        gb = unbroadcast(g * c.out * log_a, b.shape)
    return ga, gb


def _max_vjp(c, g, pick_first=np.greater):
    a, b = c.arrays
    share = pick_first(a, b) + 0.5 * (a == b)  # ties split the gradient, as in PyTorch
    return (unbroadcast(g * share.astype(g.dtype), a.shape) if _needs(c, 0) else None,
            unbroadcast(g * (1 - share).astype(g.dtype), b.shape) if _needs(c, 1) else None)


def _remainder_vjp(c, g):
    a, b = c.arrays
    return (unbroadcast(g, a.shape) if _needs(c, 0) else None,
            unbroadcast(-g * array_module(g).floor(a / b), b.shape) if _needs(c, 1) else None)


_BINARY = {
    # name: (forward(xp, a, b), vjp, onnx, saves_inputs)
    "add": (lambda xp, a, b: xp.add(a, b),
            lambda c, g: (unbroadcast(g, c.arrays[0].shape), unbroadcast(g, c.arrays[1].shape)),
            Onnx("Add"), False),
    "sub": (lambda xp, a, b: xp.subtract(a, b),
            lambda c, g: (unbroadcast(g, c.arrays[0].shape), unbroadcast(-g, c.arrays[1].shape)),
            Onnx("Sub"), False),
    "mul": (lambda xp, a, b: xp.multiply(a, b), _mul_vjp, Onnx("Mul"), True),
    "div": (_quiet(lambda xp, a, b: xp.divide(a, b)), _div_vjp, Onnx("Div"), True),
    "pow": (_quiet(lambda xp, a, b: xp.power(a, b)), _pow_vjp, Onnx("Pow"), True),
    "maximum": (lambda xp, a, b: xp.maximum(a, b), _max_vjp, Onnx("Max"), True),
    "minimum": (lambda xp, a, b: xp.minimum(a, b),
                lambda c, g: _max_vjp(c, g, np.less), Onnx("Min"), True),
    # PyTorch's remainder takes the divisor's sign (Python %); ONNX Mod(fmod=0) is integer-only.
    "remainder": (_quiet(lambda xp, a, b: xp.remainder(a, b)), _remainder_vjp, None, True),
}

for _name, (_fwd, _vjp, _onnx, _saves) in _BINARY.items():
    primitive(_name, onnx=_onnx, saves_inputs=_saves,
              saves_output=_name in ("div", "pow"))(_fwd).vjp(_vjp)

_NONDIFF_BINARY = {
    "floor_divide": (_quiet(lambda xp, a, b: xp.floor_divide(a, b)), None),
    "eq": (lambda xp, a, b: xp.equal(a, b), Onnx("Equal")),
    "ne": (lambda xp, a, b: xp.not_equal(a, b), None),
    "lt": (lambda xp, a, b: xp.less(a, b), Onnx("Less")),
    "le": (lambda xp, a, b: xp.less_equal(a, b), Onnx("LessOrEqual", since=12)),
    "gt": (lambda xp, a, b: xp.greater(a, b), Onnx("Greater")),
    "ge": (lambda xp, a, b: xp.greater_equal(a, b), Onnx("GreaterOrEqual", since=12)),
    "logical_and": (lambda xp, a, b: xp.logical_and(a, b), Onnx("And")),
    "logical_or": (lambda xp, a, b: xp.logical_or(a, b), Onnx("Or")),
    "logical_xor": (lambda xp, a, b: xp.logical_xor(a, b), Onnx("Xor")),
}
for _name, (_fwd, _onnx) in _NONDIFF_BINARY.items():
    primitive(_name, onnx=_onnx)(_fwd)


# ---- unary math and activations: vjp(ctx, g) -> (grad x,) ----------------------------------
def _x(c):
    return c.arrays[0]




def _softplus(xp, x, beta=1.0, threshold=20.0):
    # log1p(exp(bx))/b computed stably; above the threshold PyTorch returns x itself
    bx = x * beta
    soft = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
    return xp.where(bx > threshold, x, soft)


def _softplus_vjp(c, g):
    x, beta, threshold = _x(c), c.attrs.get("beta", 1.0), c.attrs.get("threshold", 20.0)
    bx, xp = x * beta, array_module(g)
    sig = 0.5 * (1 + xp.tanh(0.5 * bx))  # sigmoid without overflow
    return (g * xp.where(bx > threshold, 1, sig).astype(g.dtype),)


def _sigmoid(xp, x):
    # tanh form: no overflow warnings for large |x|, same value as 1 / (1 + exp(-x))
    return 0.5 * (1 + xp.tanh(0.5 * x))


def _clamp(xp, x, min=None, max=None):  # noqa: A002  (PyTorch's argument names)
    return xp.clip(x, min, max)


def _clamp_vjp(c, g):
    x, low, high = _x(c), c.attrs.get("min"), c.attrs.get("max")
    inside = array_module(x).ones(x.shape, dtype=bool)
    if low is not None:
        inside &= x >= low
    if high is not None:
        inside &= x <= high
    return (g * inside,)


def _zero_vjp(c, g):
    return (array_module(g).zeros_like(g),)


_UNARY = {
    # name: (forward(xp, x, **attrs), vjp, onnx)
    "neg": (lambda xp, x: xp.negative(x), lambda c, g: (-g,), Onnx("Neg")),
    "exp": (_quiet(lambda xp, x: xp.exp(x)), lambda c, g: (g * c.out,), Onnx("Exp")),
    "log": (_quiet(lambda xp, x: xp.log(x)), lambda c, g: (g / _x(c),), Onnx("Log")),
    "log1p": (_quiet(lambda xp, x: xp.log1p(x)), lambda c, g: (g / (1 + _x(c)),), None),
    "sqrt": (_quiet(lambda xp, x: xp.sqrt(x)), lambda c, g: (g / (2 * c.out),), Onnx("Sqrt")),
    "reciprocal": (_quiet(lambda xp, x: xp.reciprocal(x)), lambda c, g: (-g * c.out * c.out,),
                   Onnx("Reciprocal")),
    "abs": (lambda xp, x: xp.abs(x), lambda c, g: (g * array_module(g).sign(_x(c)),), Onnx("Abs")),
    "sign": (lambda xp, x: xp.sign(x), _zero_vjp, Onnx("Sign")),
    "floor": (lambda xp, x: xp.floor(x), _zero_vjp, Onnx("Floor")),
    "ceil": (lambda xp, x: xp.ceil(x), _zero_vjp, Onnx("Ceil")),
    "round": (lambda xp, x: xp.round(x), _zero_vjp, Onnx("Round", since=11)),
    "sin": (lambda xp, x: xp.sin(x), lambda c, g: (g * array_module(g).cos(_x(c)),), Onnx("Sin")),
    "cos": (lambda xp, x: xp.cos(x), lambda c, g: (-g * array_module(g).sin(_x(c)),), Onnx("Cos")),
    "tanh": (lambda xp, x: xp.tanh(x), lambda c, g: (g * (1 - c.out * c.out),), Onnx("Tanh")),
    "sigmoid": (_sigmoid, lambda c, g: (g * c.out * (1 - c.out),), Onnx("Sigmoid")),
    "relu": (lambda xp, x: xp.maximum(x, 0), lambda c, g: (g * (c.out > 0),), Onnx("Relu")),
    "leaky_relu": (lambda xp, x, negative_slope=0.01: xp.where(x > 0, x, x * negative_slope),
                   lambda c, g: (array_module(g).where(_x(c) > 0, g, g * c.attrs["negative_slope"]),),
                   Onnx("LeakyRelu", {"alpha": Attr("negative_slope")})),
    "softplus": (_softplus, _softplus_vjp, Onnx("Softplus")),
    "erf": (lambda xp, x: _erf(xp, x),
            lambda c, g: (g * _TWO_OVER_SQRT_PI * array_module(g).exp(-_x(c) * _x(c)),), Onnx("Erf")),
    "clamp": (_clamp, _clamp_vjp, (Onnx("Clip", {"min": Attr("min"), "max": Attr("max")}, since=6),
                                   Onnx("Clip", inputs_from_attrs=("min", "max"), since=11))),
}

_READS_OUTPUT = ("exp", "sqrt", "reciprocal", "tanh", "sigmoid", "relu")
for _name, (_fwd, _vjp, _onnx) in _UNARY.items():
    primitive(_name, onnx=_onnx, saves_inputs=_name not in ("neg",),
              saves_output=_name in _READS_OUTPUT)(_fwd).vjp(_vjp)

primitive("logical_not", onnx=Onnx("Not"))(lambda xp, x: xp.logical_not(x))
primitive("isnan", onnx=Onnx("IsNaN", since=9))(lambda xp, x: xp.isnan(x))
primitive("isinf", onnx=Onnx("IsInf", since=10))(lambda xp, x: xp.isinf(x))
primitive("isfinite", onnx=None)(lambda xp, x: xp.isfinite(x))


@primitive("cast", onnx=Onnx("Cast", {"to": Attr("dtype")}), saves_inputs=False)
def _cast(xp, x, dtype):
    return x.astype(dtype)


@_cast.vjp
def _cast_vjp(c, g):
    return (g.astype(c.arrays[0].dtype) if c.arrays[0].dtype.kind == "f" else None,)


@primitive("gelu", onnx=Onnx("Gelu", {"approximate": Attr("approximate")}, since=20),
           stash=True)
def _gelu(xp, x, approximate="none"):
    """x * Phi(x); the exact form stashes the normal cdf Phi(x) so that the vjp need not
    evaluate the erf polynomial a second time (a third of a Transformer's GELU time)."""
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))), None
    cdf = _erf(xp, x * _INV_SQRT_2)
    cdf += 1
    cdf *= 0.5
    return x * cdf, cdf


@_gelu.vjp
def _gelu_vjp(c, g):
    x, xp = _x(c), array_module(g)
    if c.attrs.get("approximate", "none") == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        t = xp.tanh(inner)
        d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner),)
    # g * (Phi(x) + x * pdf(x)), in one buffer
    grad = xp.multiply(x, x, out=xp.empty_like(x))  # an array even for 0-d x
    grad *= -0.5
    xp.exp(grad, out=grad)
    grad *= 1 / math.sqrt(2 * math.pi)
    grad *= x
    grad += c.saved
    grad *= g
    return (grad,)


@primitive("where", onnx=Onnx("Where"))
def _where(xp, condition, a, b):
    return xp.where(condition, a, b)


@_where.vjp
def _where_vjp(c, g):
    cond, a, b = c.arrays
    xp = array_module(g)
    zero = xp.zeros((), dtype=g.dtype)
    return (None,
            unbroadcast(xp.where(cond, g, zero), a.shape) if _needs(c, 1) else None,
            unbroadcast(xp.where(cond, zero, g), b.shape) if _needs(c, 2) else None)


# ---- public functions ----------------------------------------------------------------------
def _binary(name, a, b):
    a, b = binary_operands(a, b)
    return apply(OPS[name], a, b)


def _scaled(value, alpha):
    return mul(value, alpha) if isinstance(value, Tensor) else value * alpha


def add(input, other, *, alpha=1):  # noqa: A002  (PyTorch's argument names)
    """input + alpha * other, broadcasting.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.add(mk.ones(2), mk.ones(2))
        tensor([2., 2.])
    """
    return _binary("add", input, other if alpha == 1 else _scaled(other, alpha))


def sub(input, other, *, alpha=1):  # noqa: A002
    """input - alpha * other, broadcasting.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.sub(mk.ones(2), 1)
        tensor([0., 0.])
    """
    return _binary("sub", input, other if alpha == 1 else _scaled(other, alpha))


def mul(input, other):  # noqa: A002
    """input * other, broadcasting.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.mul(mk.tensor([1.0, 2.0]), 3)
        tensor([3., 6.])
    """
    return _binary("mul", input, other)


def div(input, other, *, rounding_mode=None):  # noqa: A002
    """input / other (true division; integers give float32), or rounded with rounding_mode
    "floor" / "trunc".

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.div(mk.tensor([1, 2]), 2)
        tensor([0.5000, 1.0000])
    """
    if rounding_mode == "floor":
        return floor_divide(input, other)
    a, b = binary_operands(input, other)
    if a.array.dtype.kind != "f":
        a, b = cast(a, np.dtype(np.float32)), cast(b, np.dtype(np.float32))
    result = apply(OPS["div"], a, b)
    if rounding_mode == "trunc":
        result = apply(OPS["sign"], result) * apply(OPS["floor"], apply(OPS["abs"], result))
        result = cast(result, np.result_type(input.array.dtype if isinstance(input, Tensor)
                                             else other.array.dtype))
    elif rounding_mode is not None:
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', "
                         f"got {rounding_mode!r}")
    return result


def true_divide(input, other):  # noqa: A002
    """Alias of div.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.true_divide(mk.ones(1), 4)
        tensor([0.2500])
    """
    return div(input, other)


def floor_divide(input, other):  # noqa: A002
    """floor(input / other) (not differentiable).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.floor_divide(mk.tensor([7, -7]), 2)
        tensor([ 3, -4])
    """
    return _binary("floor_divide", input, other)


def remainder(input, other):  # noqa: A002
    """Python-style modulus (result has the divisor's sign).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.remainder(mk.tensor([-3.0, 3.0]), 2)
        tensor([1., 1.])
    """
    return _binary("remainder", input, other)


def pow(input, exponent):  # noqa: A001, A002
    """input ** exponent, broadcasting.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.pow(mk.tensor([2.0, 3.0]), 2)
        tensor([4., 9.])
    """
    return _binary("pow", input, exponent)


def maximum(input, other):  # noqa: A002
    """Elementwise maximum (ties split the gradient).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.maximum(mk.tensor([1.0, 5.0]), mk.tensor([3.0, 2.0]))
        tensor([3., 5.])
    """
    return _binary("maximum", input, other)


def minimum(input, other):  # noqa: A002
    """Elementwise minimum (ties split the gradient).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.minimum(mk.tensor([1.0, 5.0]), mk.tensor([3.0, 2.0]))
        tensor([1., 2.])
    """
    return _binary("minimum", input, other)


def _comparison(name):
    def compare(input, other):  # noqa: A002
        return _binary(name, input, other)
    compare.__name__ = name
    compare.__doc__ = (f"Elementwise `{name}` comparison, a bool tensor.\n\n    Example:\n"
                       f"        >>> import modelkit.authoring as mk\n"
                       f"        >>> mk.{name}(mk.tensor([1, 2]), 2).dtype\n"
                       f"        modelkit.bool\n    ")
    return compare


eq, ne, lt, le, gt, ge = (_comparison(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))
logical_and, logical_or, logical_xor = (
    _comparison(n) for n in ("logical_and", "logical_or", "logical_xor"))
greater, less, greater_equal, less_equal, not_equal = gt, lt, ge, le, ne


def _unary(name):
    op = OPS[name]

    def fn(input):  # noqa: A002
        return apply(op, input)
    fn.__name__ = name
    fn.__doc__ = (f"Elementwise {name}.\n\n    Example:\n"
                  f"        >>> import modelkit.authoring as mk\n"
                  f"        >>> mk.{name}(mk.zeros(2)).shape\n"
                  f"        modelkit.Size([2])\n    ")
    return fn


# noqa: A001  (abs and round shadow builtins, as torch.abs / torch.round do)
(neg, exp, log, log1p, sqrt, reciprocal, abs, sign, floor, ceil, round, sin, cos, tanh,
 sigmoid, relu, erf, logical_not, isnan, isinf, isfinite) = (
    _unary(n) for n in ("neg", "exp", "log", "log1p", "sqrt", "reciprocal", "abs", "sign",
                        "floor", "ceil", "round", "sin", "cos", "tanh", "sigmoid", "relu", "erf",
                        "logical_not", "isnan", "isinf", "isfinite"))
negative = neg


def rsqrt(input):  # noqa: A002
    """1 / sqrt(input).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.rsqrt(mk.tensor([4.0]))
        tensor([0.5000])
    """
    return reciprocal(sqrt(input))


def square(input):  # noqa: A002
    """input * input.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.square(mk.tensor([3.0]))
        tensor([9.])
    """
    return mul(input, input)


def leaky_relu(input, negative_slope=0.01):  # noqa: A002
    """x if x > 0 else negative_slope * x.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.leaky_relu(mk.tensor([-1.0, 1.0]), 0.1)
        tensor([-0.1000,  1.0000])
    """
    return apply(OPS["leaky_relu"], input, negative_slope=float(negative_slope))


def gelu(input, approximate="none"):  # noqa: A002
    """Gaussian error linear unit: exact (erf) or approximate="tanh".

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.gelu(mk.tensor([1.0]))
        tensor([0.8413])
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return apply(OPS["gelu"], input, approximate=approximate)


def silu(input):  # noqa: A002
    """x * sigmoid(x) (a.k.a. swish).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.silu(mk.tensor([1.0]))
        tensor([0.7311])
    """
    return mul(input, sigmoid(input))


def softplus(input, beta=1.0, threshold=20.0):  # noqa: A002
    """log(1 + exp(beta * x)) / beta, linear above `threshold`.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.softplus(mk.tensor([0.0]))
        tensor([0.6931])
    """
    return apply(OPS["softplus"], input, beta=float(beta), threshold=float(threshold))


def clamp(input, min=None, max=None):  # noqa: A002
    """Limit values to [min, max]; either bound may be None or a Tensor.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.clamp(mk.tensor([-2.0, 0.5, 2.0]), -1, 1)
        tensor([-1.0000,  0.5000,  1.0000])
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        result = input if min is None else maximum(input, min)
        return result if max is None else minimum(result, max)
    return apply(OPS["clamp"], input, min=min, max=max)


clip = clamp


def where(condition, input=None, other=None):  # noqa: A002
    """input where condition else other (scalars allowed), broadcasting all three.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.where(mk.tensor([True, False]), mk.ones(2), 0.0)
        tensor([1., 0.])
    """
    if input is None and other is None:
        from modelkit.authoring.ops.indexing import nonzero
        return nonzero(condition, as_tuple=True)
    a, b = binary_operands(input, other)
    if condition.array.dtype != np.bool_:
        condition = cast(condition, np.dtype(np.bool_))
    return apply(OPS["where"], condition, a, b)


def masked_fill(input, mask, value):  # noqa: A002
    """input with `value` where `mask` is True (mask broadcasts to input).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.masked_fill(mk.zeros(2), mk.tensor([True, False]), 5.0)
        tensor([5., 0.])
    """
    if mask.array.dtype != np.bool_:
        raise TypeError(f"masked_fill only supports boolean masks, but got mask with dtype "
                        f"{mask.dtype}")
    fill = value if isinstance(value, Tensor) else scalar_tensor(value, input.array.dtype)
    return apply(OPS["where"], mask, cast(fill, input.array.dtype), input)


# ---- ONNX lowerings that need more than one node (`g`: the exporter's emitter) ---------------
@OPS["remainder"].lowering
def _remainder_onnx(g, a, b):
    if g.dtype(a).kind in "iu":
        return g.op("Mod", a, b, fmod=0)  # integer Mod takes the divisor's sign, as Python's %
    return g.op("Sub", a, g.op("Mul", g.op("Floor", g.op("Div", a, b)), b))


@OPS["floor_divide"].lowering
def _floor_divide_onnx(g, a, b):
    if g.dtype(a).kind in "iu":  # ONNX integer Div truncates: subtract the floor remainder first
        return g.op("Div", g.op("Sub", a, g.op("Mod", a, b, fmod=0)), b)
    return g.op("Floor", g.op("Div", a, b))


@OPS["ne"].lowering
def _ne_onnx(g, a, b):
    return g.op("Not", g.op("Equal", a, b))


@OPS["log1p"].lowering
def _log1p_onnx(g, x):
    # NOTE: log(1 + x) loses relative precision for |x| below float eps (ONNX has no Log1p)
    return g.op("Log", g.op("Add", x, g.const(1, g.dtype(x))))


@OPS["isfinite"].lowering
def _isfinite_onnx(g, x):
    return g.op("Not", g.op("Or", g.op("IsInf", x), g.op("IsNaN", x)))


@OPS["gelu"].lowering
def _gelu_onnx(g, x, approximate="none"):
    if g.spec is not None:
        return g.emit_spec()
    dtype = g.dtype(x)
    if approximate == "tanh":
        cube = g.op("Mul", g.op("Mul", g.op("Mul", x, x), x), g.const(0.044715, dtype))
        inner = g.op("Mul", g.op("Add", x, cube), g.const(_SQRT_2_OVER_PI, dtype))
        gate = g.op("Add", g.op("Tanh", inner), g.const(1, dtype))
    else:
        gate = g.op("Add", g.op("Erf", g.op("Mul", x, g.const(_INV_SQRT_2, dtype))),
                    g.const(1, dtype))
    return g.op("Mul", g.op("Mul", x, gate), g.const(0.5, dtype))


@OPS["softplus"].lowering
def _softplus_onnx(g, x, beta=1.0, threshold=20.0):
    # ONNX Softplus has no beta; above the threshold log1p(exp(bx))/b equals x in float32 anyway
    if beta == 1.0:
        return g.op("Softplus", x)
    scale = g.const(beta, g.dtype(x))
    return g.op("Div", g.op("Softplus", g.op("Mul", x, scale)), scale)
