"""Elementwise ONNX kernels: one table of array-module functions, plus the ops with real logic.

Every kernel keeps its input's dtype (float32 stays float32: constants are Python floats, which
numpy and cupy treat as weak scalars) and broadcasts like numpy, as ONNX specifies.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.kernels.registry import lookup
    >>> lookup("", "Add", 17).fn(np, np.float32([1, 2]), np.float32([3]))
    (array([4., 5.], dtype=float32),)
"""

from __future__ import annotations

import functools
import math

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel, register

# One row per op whose ONNX semantics are exactly one array-module function.
_UNARY = {
    "Neg": "negative", "Abs": "abs", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Exp": "exp",
    "Log": "log", "Tanh": "tanh", "Floor": "floor", "Ceil": "ceil", "Sign": "sign",
    "Round": "rint",  # rint rounds half to even, as ONNX Round does
    "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "arcsin", "Acos": "arccos",
    "Atan": "arctan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "arcsinh", "Acosh": "arccosh",
    "Atanh": "arctanh", "Not": "logical_not", "IsNaN": "isnan", "BitwiseNot": "invert",
}
_BINARY = {
    "Add": "add", "Sub": "subtract", "Mul": "multiply", "And": "logical_and", "Or": "logical_or",
    "Xor": "logical_xor", "Equal": "equal", "Less": "less", "Greater": "greater",
    "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal", "BitwiseAnd": "bitwise_and",
    "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
}
_VARIADIC = {"Min": "minimum", "Max": "maximum", "Sum": "add"}


def _unary(name):
    return lambda xp, x: (getattr(xp, name)(x),)


def _binary(name):
    return lambda xp, a, b: (getattr(xp, name)(a, b),)


def _variadic(name):
    return lambda xp, *xs: (functools.reduce(getattr(xp, name), xs),)


for _op, _name in _UNARY.items():
    register(_op, _unary(_name))
for _op, _name in _BINARY.items():
    register(_op, _binary(_name))
for _op, _name in _VARIADIC.items():
    register(_op, _variadic(_name))


@kernel("Mean")
def mean(xp, *xs):
    """Elementwise mean of any number of broadcastable inputs.

    Example:
        >>> mean(np, np.float32([1, 2]), np.float32([3, 6]))
        (array([2., 4.], dtype=float32),)
    """
    return (functools.reduce(xp.add, xs) / len(xs),)


@kernel("Div")
def div(xp, a, b):
    """a / b; integer division truncates toward zero, as C and onnxruntime do.

    Example:
        >>> div(np, np.int64([7, -7]), np.int64([2, 2]))
        (array([ 3, -3]),)
    """
    if a.dtype.kind in "iu":
        # a - fmod(a, b) is an exact multiple of b, so floor division truncates, in integers
        return ((a - xp.fmod(a, b)) // b,)
    return (xp.divide(a, b),)


@kernel("Pow")
def power(xp, base, exponent):
    """base ** exponent with the base's dtype (ONNX Pow never promotes).

    Example:
        >>> power(np, np.float32([2, 3]), np.int64([2, 2]))
        (array([4., 9.], dtype=float32),)
    """
    if base.dtype.kind in "iu" and exponent.dtype.kind in "iu":
        return (xp.power(base, exponent.astype(base.dtype)),)
    return (xp.power(base, exponent).astype(base.dtype, copy=False),)


@kernel("Mod")
def mod(xp, a, b, *, fmod=0):
    """Remainder: sign of the divisor (Python) when fmod=0, of the dividend (C fmod) when fmod=1.

    Example:
        >>> mod(np, np.int32([-4, 7]), np.int32([3, -3]))
        (array([ 2, -2], dtype=int32),)
    """
    return ((xp.fmod if fmod else xp.mod)(a, b),)


# erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4] (|erf| rounds to 1 in float32 beyond): a rational
# least-squares fit made for this module against math.erf; max error 3.5e-7 (3 ulp) in float32.
_ERF_P = (1.128379168, 0.185279946, 0.05435404203, 0.003856481773, 0.000380860908,
          4.715162614e-06, -1.336050634e-08)
_ERF_Q = (1.0, 0.4975334745, 0.1140140321, 0.01547985736, 0.001310694421, 6.340398689e-05)


def _float16_via_float32(fn):
    """Run a kernel in float32 for float16 input and round once at the end: a chain of float16
    steps (erf's polynomial, 1 / (1 + exp(-x))) loses more than the 1e-3 users expect."""
    @functools.wraps(fn)
    def kernel_fn(xp, x, *args, **attrs):
        if x.dtype != "float16":
            return fn(xp, x, *args, **attrs)
        return tuple(y.astype("float16") for y in fn(xp, x.astype("float32"), *args, **attrs))
    return kernel_fn


def _scratch(xp, x):
    """A new array shaped and typed like x, to compute into in place with `out=`.

    NOTE: numpy returns scalars, not arrays, for 0-d results, and `out=` needs an array.
    """
    return xp.empty(x.shape, dtype=x.dtype)


def _polynomial(xp, t, coefficients, out=None):
    # Horner's rule, in place on one array (`out`, or a new one): on numpy a fresh array costs
    # more than the arithmetic done in it
    result = xp.multiply(t, coefficients[-1], out=out)
    for c in reversed(coefficients[1:-1]):
        result += c
        result *= t
    result += coefficients[0]
    return result


def _erf_of_clipped(xp, clipped):
    """erf of x already clipped to [-4, 4], in a scratch array that it overwrites."""
    t = clipped * clipped
    result = _polynomial(xp, t, _ERF_P)
    result *= clipped
    result /= _polynomial(xp, t, _ERF_Q, out=clipped)
    return result


def erf_values(xp, x):
    """The error function of a float array, in the array's dtype.

    Example:
        >>> float(erf_values(np, np.float32([0.5]))[0])  # doctest: +ELLIPSIS
        0.52049...
    """
    clipped = _scratch(xp, x)
    xp.clip(x, -4.0, 4.0, out=clipped)
    return _erf_of_clipped(xp, clipped)


@kernel("Erf")
@_float16_via_float32
def erf(xp, x):
    """ONNX Erf.

    Example:
        >>> erf(np, np.float32([0.0]))
        (array([0.], dtype=float32),)
    """
    return (erf_values(xp, x),)


def sigmoid_values(xp, x):
    """1 / (1 + exp(-x)).

    Example:
        >>> sigmoid_values(np, np.float32([0.0, -200.0]))
        array([0.5, 0. ], dtype=float32)
    """
    result = xp.negative(x, out=_scratch(xp, x))
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x gives the right 0
        xp.exp(result, out=result)
    result += 1
    return xp.reciprocal(result, out=result)


def softplus_values(xp, x):
    """log(1 + exp(x)) without overflow for large x.

    Example:
        >>> softplus_values(np, np.float32([0.0, 200.0]))
        array([  0.6931472, 200.       ], dtype=float32)
    """
    result = xp.abs(x, out=_scratch(xp, x))
    xp.negative(result, out=result)
    xp.exp(result, out=result)
    xp.log1p(result, out=result)
    result += xp.maximum(x, 0)
    return result


register("Sigmoid", _float16_via_float32(lambda xp, x: (sigmoid_values(xp, x),)))
register("Softplus", _float16_via_float32(lambda xp, x: (softplus_values(xp, x),)))
register("Softsign", _float16_via_float32(lambda xp, x: (x / (1 + xp.abs(x)),)))
register("Mish", _float16_via_float32(lambda xp, x: (x * xp.tanh(softplus_values(xp, x)),)))


# Relu's row of zeros: long enough for SIMD, short enough to stay in L1; smaller inputs take
# the plain path
_SMALL = 4096
_ZERO_ROWS: dict = {}


@kernel("Relu")
def relu(xp, x):
    """max(x, 0).

    Example:
        >>> relu(np, np.float32([-1, 2]))
        (array([0., 2.], dtype=float32),)
    """
    if xp is not np or x.dtype.kind != "f" or x.size < _SMALL or not x.flags.c_contiguous:
        return (xp.maximum(x, 0),)
    # NOTE: numpy's maximum against a broadcast scalar runs without SIMD, against a contiguous
    # row with it (3x faster): compare rows of the flat data with a row of zeros
    zeros = _ZERO_ROWS.get(x.dtype)
    if zeros is None:
        zeros = _ZERO_ROWS[x.dtype] = np.zeros(_SMALL, x.dtype)
    result = np.empty(x.shape, x.dtype)
    flat_in, flat_out = x.reshape(-1), result.reshape(-1)
    whole = x.size - x.size % _SMALL
    np.maximum(flat_in[:whole].reshape(-1, _SMALL), zeros,
               out=flat_out[:whole].reshape(-1, _SMALL))
    np.maximum(flat_in[whole:], zeros[:x.size - whole], out=flat_out[whole:])
    return (result,)


def _positive_plus_scaled_negative(xp, x, scale):
    """max(x, 0) + scale(min(x, 0)): activations that treat the two signs differently, without
    xp.where (several times slower than arithmetic on numpy)."""
    result = scale(xp.minimum(x, 0, out=_scratch(xp, x)))
    result += xp.maximum(x, 0)
    return result


@kernel("PRelu")
def prelu(xp, x, slope):
    """x if x >= 0 else slope * x, slope broadcasting against x.

    Example:
        >>> prelu(np, np.float32([-2, 2]), np.float32([0.5]))
        (array([-1.,  2.], dtype=float32),)
    """
    return (_positive_plus_scaled_negative(xp, x, lambda negative: negative * slope),)


@kernel("LeakyRelu")
def leaky_relu(xp, x, *, alpha=0.01):
    """x if x >= 0 else alpha * x.

    Example:
        >>> leaky_relu(np, np.float32([-1, 2]), alpha=0.1)
        (array([-0.1,  2. ], dtype=float32),)
    """
    # for alpha <= 1 the larger of x and alpha * x is x above 0 and alpha * x below
    return ((xp.maximum if alpha <= 1 else xp.minimum)(x, x * alpha),)


@kernel("ThresholdedRelu")
def thresholded_relu(xp, x, *, alpha=1.0):
    """x if x > alpha else 0.

    Example:
        >>> thresholded_relu(np, np.float32([0.5, 2]))
        (array([0., 2.], dtype=float32),)
    """
    return (xp.where(x > alpha, x, 0).astype(x.dtype, copy=False),)


def _scaled_expm1_inplace(xp, t, alpha):
    xp.expm1(t, out=t)
    t *= alpha
    return t


@kernel("Elu")
@_float16_via_float32
def elu(xp, x, *, alpha=1.0):
    """x if x >= 0 else alpha * (exp(x) - 1).

    Example:
        >>> elu(np, np.float32([0, 1]))
        (array([0., 1.], dtype=float32),)
    """
    def scale(negative):
        return _scaled_expm1_inplace(xp, negative, alpha)
    return (_positive_plus_scaled_negative(xp, x, scale),)


@kernel("Celu")
@_float16_via_float32
def celu(xp, x, *, alpha=1.0):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)).

    Example:
        >>> celu(np, np.float32([0, 1]))
        (array([0., 1.], dtype=float32),)
    """
    return (xp.maximum(x, 0) + xp.minimum(xp.expm1(xp.minimum(x, 0) / alpha) * alpha, 0),)


@kernel("Selu")
@_float16_via_float32
def selu(xp, x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    """gamma * (x if x > 0 else alpha * (exp(x) - 1)).

    Example:
        >>> selu(np, np.float32([0.0]))
        (array([0.], dtype=float32),)
    """
    def scale(negative):
        return _scaled_expm1_inplace(xp, negative, alpha)
    result = _positive_plus_scaled_negative(xp, x, scale)
    result *= gamma
    return (result,)


@kernel("HardSigmoid")
@_float16_via_float32
def hard_sigmoid(xp, x, *, alpha=0.2, beta=0.5):
    """clip(alpha * x + beta, 0, 1).

    Example:
        >>> hard_sigmoid(np, np.float32([-10, 0, 10]))
        (array([0. , 0.5, 1. ], dtype=float32),)
    """
    result = xp.multiply(x, alpha, out=_scratch(xp, x))
    result += beta
    xp.clip(result, 0, 1, out=result)
    return (result,)


@kernel("HardSwish")
@_float16_via_float32
def hard_swish(xp, x):
    """x * clip(x / 6 + 0.5, 0, 1).

    Example:
        >>> hard_swish(np, np.float32([-4, 0, 4]))
        (array([-0.,  0.,  4.], dtype=float32),)
    """
    result = xp.multiply(x, 1 / 6, out=_scratch(xp, x))
    result += 0.5
    xp.clip(result, 0, 1, out=result)
    result *= x
    return (result,)


@kernel("Gelu", since=20)
@_float16_via_float32
def gelu(xp, x, *, approximate="none"):
    """0.5 * x * (1 + erf(x / sqrt 2)), or its tanh approximation when approximate="tanh".

    Example:
        >>> gelu(np, np.float32([0.0, 10.0]))
        (array([ 0., 10.], dtype=float32),)
    """
    if approximate == "tanh":
        result = xp.multiply(x, x, out=_scratch(xp, x))
        result *= 0.044715
        result += 1
        result *= x
        result *= math.sqrt(2 / math.pi)
        xp.tanh(result, out=result)
    elif approximate == "none":
        scaled = _scratch(xp, x)
        xp.multiply(x, math.sqrt(0.5), out=scaled)
        xp.clip(scaled, -4.0, 4.0, out=scaled)
        result = _erf_of_clipped(xp, scaled)
    else:
        raise KernelError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    result += 1
    result *= x
    result *= 0.5
    return (result,)


@kernel("Shrink")
def shrink(xp, x, *, bias=0.0, lambd=0.5):
    """x - bias above lambd, x + bias below -lambd, 0 between.

    Example:
        >>> shrink(np, np.float32([-2, 0, 2]), bias=1.0)
        (array([-1.,  0.,  1.], dtype=float32),)
    """
    shrunk = xp.where(x < -lambd, x + bias, xp.where(x > lambd, x - bias, 0))
    return (shrunk.astype(x.dtype, copy=False),)


@kernel("Clip")
def clip_attrs(xp, x, *, min=None, max=None):  # noqa: A002 (ONNX's names)
    """Clip before opset 11, bounds as attributes.

    ONNX's defaults are -/+ the float32 maximum: no bound at all, which None says without
    overflowing a float16 input.

    Example:
        >>> clip_attrs(np, np.float32([-2, 2]), min=-1.0)
        (array([-1.,  2.], dtype=float32),)
    """
    return clip(xp, x, min, max)


@kernel("Clip", since=11)
def clip(xp, x, low=None, high=None):
    """Clip from opset 11, optional bounds as inputs; low > high gives high everywhere.

    Example:
        >>> clip(np, np.float32([-2, 2]), None, np.float32(1))
        (array([-2.,  1.], dtype=float32),)
    """
    if low is not None and high is not None:
        return (xp.clip(x, low, high),)
    if low is not None:
        return (xp.maximum(x, low),)
    if high is not None:
        return (xp.minimum(x, high),)
    return (x,)


@kernel("Where")
def where(xp, condition, a, b):
    """a where condition else b.

    Example:
        >>> where(np, np.array([True, False]), np.float32([1, 2]), np.float32([3, 4]))
        (array([1., 4.], dtype=float32),)
    """
    return (xp.where(condition, a, b),)


@kernel("IsInf")
def is_inf(xp, x, *, detect_negative=1, detect_positive=1):
    """True at infinities of the selected signs.

    Example:
        >>> is_inf(np, np.float32([-np.inf, np.inf, 1]), detect_negative=0)
        (array([False,  True, False]),)
    """
    if detect_negative and detect_positive:
        return (xp.isinf(x),)
    if detect_negative:
        return (x == -math.inf,)
    if detect_positive:
        return (x == math.inf,)
    return (xp.zeros(x.shape, dtype=bool),)


@kernel("BitShift")
def bit_shift(xp, x, amount, *, direction):
    """x << amount (direction "LEFT") or x >> amount ("RIGHT") on unsigned integers.

    Example:
        >>> bit_shift(np, np.uint8([1, 4]), np.uint8([2, 1]), direction="RIGHT")
        (array([0, 2], dtype=uint8),)
    """
    if direction not in ("LEFT", "RIGHT"):
        raise KernelError(f"BitShift: direction must be 'LEFT' or 'RIGHT', got {direction!r}")
    shift = xp.left_shift if direction == "LEFT" else xp.right_shift
    return (shift(x, amount),)


register("Identity", lambda xp, x: (x,))

# ONNX TensorProto.DataType numbers of the element types the runtime computes with.
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
}
_ONNX_DTYPE_NAMES = {
    8: "string", 14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8e4m3fn",
    18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4",
    23: "float4e2m1",
}


def numpy_dtype(onnx_type: int) -> np.dtype:
    """The numpy dtype of an ONNX TensorProto data type number.

    Example:
        >>> numpy_dtype(1)
        dtype('float32')
    """
    if onnx_type not in ONNX_DTYPES:
        name = _ONNX_DTYPE_NAMES.get(onnx_type, "unknown")
        raise KernelError(f"element type {onnx_type} ({name}) is not supported by the runtime; "
                          f"supported: {sorted(ONNX_DTYPES.values())}")
    return np.dtype(ONNX_DTYPES[onnx_type])


def _cast(x, dtype):
    # NOTE: float -> integer casts of NaN/inf/out-of-range values are undefined in ONNX; numpy
    # gives what C gives, as onnxruntime does. Rounding to float16 is IEEE round-to-nearest-even.
    return x.astype(dtype, copy=False)


@kernel("Cast", since=6)
def cast(xp, x, *, to, saturate=1, round_mode="up"):
    """Convert to the ONNX element type number `to` (1 float32, 7 int64, 9 bool, ...).

    `saturate` and `round_mode` only concern float8 types, which the runtime does not support.

    Example:
        >>> cast(np, np.float32([1.7, -1.7]), to=7)
        (array([ 1, -1]),)
    """
    return (_cast(x, numpy_dtype(to)),)


@kernel("CastLike")
def cast_like(xp, x, like, *, saturate=1, round_mode="up"):
    """Convert x to the element type of `like`.

    Example:
        >>> cast_like(np, np.int32([3]), np.float32([0]))
        (array([3.], dtype=float32),)
    """
    return (_cast(x, like.dtype),)
