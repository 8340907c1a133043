"""matmul and linear: forward through the shared `edge_runtime.kernels.matmul` kernels.

Example:
    >>> import modelkit.authoring as mk
    >>> (mk.ones(2, 3) @ mk.ones(3, 4)).shape
    modelkit.Size([2, 4])
"""

from __future__ import annotations

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.errors import DTypeError, ShapeError
from modelkit.authoring.ops.common import shape_str, unbroadcast
from modelkit.authoring.ops.registry import OPS, Onnx, apply, primitive
from modelkit.authoring.tensor import Tensor
from modelkit.edge_runtime.kernels import matmul as matmul_kernels


@primitive("matmul", onnx=Onnx("MatMul"))
def _matmul(xp, a, b):
    return matmul_kernels.matmul(xp, a, b)[0]


@_matmul.vjp
def _matmul_vjp(c, g):
    a, b = c.arrays
    # 1-D operands act as a row (a) or a column (b) vector; restore those dims in g
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    xp = array_module(g)
    if a.ndim == 1:
        g = xp.expand_dims(g, -2)
    if b.ndim == 1:
        g = xp.expand_dims(g, -1)
    ga = gb = None
    if c.needs_input_grad[0]:
        ga = unbroadcast(xp.matmul(g, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    if c.needs_input_grad[1]:
        gb = unbroadcast(xp.matmul(xp.swapaxes(a2, -1, -2), g), b2.shape).reshape(b.shape)
    return ga, gb


@primitive("linear", onnx=Onnx("Gemm", {"transB": 1}))
def _linear(xp, x, weight, bias=None):
    """y = x @ weight.T + bias; x may have any number of leading dims (Gemm when 2-D, else the
    exporter writes MatMul + Add)."""
    if x.ndim == 2:
        return matmul_kernels.gemm(xp, x, weight, bias, transB=1)[0]
    y = matmul_kernels.matmul(xp, x, weight.T)[0]
    if bias is not None:
        y += bias
    return y


@_linear.vjp
def _linear_vjp(c, g):
    x, weight, bias = c.arrays
    gx = gw = gb = None
    if c.needs_input_grad[0]:
        gx = g @ weight
    g2 = g.reshape(-1, g.shape[-1])
    if c.needs_input_grad[1]:
        gw = g2.T @ x.reshape(-1, x.shape[-1])
    if bias is not None and c.needs_input_grad[2]:
        gb = g2.sum(axis=0)
    return gx, gw, gb


def _check_dtypes(op, a, b):
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.array.dtype != b.array.dtype:
        raise DTypeError(f"{op}: expected both operands to have the same dtype, but got "
                         f"{a.dtype} (shape {tuple(a.shape)}) and {b.dtype} (shape "
                         f"{tuple(b.shape)})")


def _check_inner(op, a_shape, b_shape, b_inner_axis):
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ShapeError(f"{op}: both arguments need at least 1 dimension, got shapes "
                         f"{tuple(a_shape)} and {tuple(b_shape)}")
    if a_shape[-1] != b_shape[b_inner_axis]:
        raise ShapeError(f"{op}: mat1 and mat2 shapes cannot be multiplied "
                         f"({shape_str(a_shape)} and {shape_str(b_shape)})")


def matmul(input, other):  # noqa: A002
    """Matrix product with numpy/PyTorch semantics: batched over leading dims, 1-D promoted.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.matmul(mk.ones(5, 2, 3), mk.ones(3, 4)).shape
        modelkit.Size([5, 2, 4])
    """
    _check_dtypes("matmul", input, other)
    _check_inner("matmul", input.array.shape, other.array.shape, -2 if other.array.ndim > 1 else 0)
    return apply(OPS["matmul"], input, other)


mm = bmm = matmul


def linear(input, weight, bias=None):  # noqa: A002
    """input @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch.

    Example:
        >>> import modelkit.authoring as mk
        >>> linear(mk.ones(2, 3), mk.ones(4, 3), mk.zeros(4))
        tensor([[3., 3., 3., 3.],
                [3., 3., 3., 3.]])
    """
    if weight.array.ndim != 2:
        raise ShapeError(f"linear: weight must be 2-D (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")
    _check_dtypes("linear", input, weight)
    x_shape = input.array.shape
    if not x_shape or x_shape[-1] != weight.array.shape[1]:
        rows = int(np.prod(x_shape[:-1])) if x_shape else 1
        raise ShapeError(f"linear: mat1 and mat2 shapes cannot be multiplied "
                         f"({rows}x{x_shape[-1] if x_shape else 1} and "
                         f"{shape_str(weight.array.shape[::-1])}) (input shape "
                         f"{tuple(x_shape)}, weight shape {tuple(weight.shape)})")
    if bias is not None and bias.array.shape != (weight.array.shape[0],):
        raise ShapeError(f"linear: bias must have shape ({weight.array.shape[0]},), got "
                         f"{tuple(bias.shape)}")
    return apply(OPS["linear"], input, weight, bias)


@OPS["linear"].lowering
def _linear_onnx(g, x, weight, bias=None):
    """One Gemm for 2-D input; MatMul (+ Add) with the transposed weight otherwise."""
    if len(g.shape(x)) == 2:
        return g.emit_spec()
    y = g.op("MatMul", x, g.op("Transpose", weight, perm=[1, 0]))
    return y if bias is None else g.op("Add", y, bias)
