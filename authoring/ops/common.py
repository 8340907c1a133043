"""Helpers shared by the op families: operand conversion, dims, un-broadcasting of gradients.

Example:
    >>> import numpy as np
    >>> unbroadcast(np.ones((2, 3), np.float32), (1, 3))
    array([[2., 2., 2.]], dtype=float32)
"""

from __future__ import annotations

import numbers

import numpy as np

from modelkit.authoring import dtypes
from modelkit.authoring.ops.registry import OPS, apply
from modelkit.authoring.tensor import Tensor, _check_dim

check_dim = _check_dim


def unbroadcast(g, shape):
    """Sum `g` over the axes that broadcasting added or stretched, giving an array of `shape`."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, d in enumerate(shape)
                                      if d == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def scatter_add(target, key, values) -> None:
    """`target[key] += values` with repeated indices accumulating (numpy's `add.at`; on cupy
    `cupyx.scatter_add`, the same operation with atomics).

    Example:
        >>> t = np.zeros(2); scatter_add(t, np.array([0, 0]), np.ones(2)); t
        array([2., 0.])
    """
    if isinstance(target, np.ndarray):
        np.add.at(target, key, values)
        return
    import cupyx  # only reached with cupy arrays, so cupy is already imported
    cupyx.scatter_add(target, key, values)


def dims(dim, ndim):
    """Normalise `dim` (None, int, or sequence of ints) to None or a sorted tuple of axes."""
    if dim is None:
        return None
    if isinstance(dim, numbers.Integral):
        return (check_dim(int(dim), ndim),)
    axes = tuple(sorted(check_dim(int(d), ndim) for d in dim))
    if len(set(axes)) != len(axes):
        raise RuntimeError(f"dim {tuple(dim)} appears multiple times in the list of dims")
    return axes if axes else None


def scalar_tensor(value, like: np.dtype) -> Tensor:
    """A 0-d constant Tensor for a Python number combined with a tensor of dtype `like`."""
    if isinstance(value, (bool, np.bool_)):
        dtype = like
    elif isinstance(value, numbers.Integral):
        dtype = like if like.kind != "b" else np.dtype(np.int64)
    elif isinstance(value, numbers.Real):
        dtype = like if like.kind == "f" else dtypes.DEFAULT_FLOAT.numpy
    else:
        raise TypeError(f"unsupported operand type {type(value).__name__}; expected a Tensor or "
                        "a Python number")
    return Tensor._wrap(np.asarray(value, dtype=dtype))


def as_tensor_operand(value) -> Tensor:
    """A Tensor as-is; a number, list or array as a constant Tensor (default dtypes)."""
    if isinstance(value, Tensor):
        return value
    from modelkit.authoring.creation import tensor
    return tensor(value)


def cast(x: Tensor, dtype: np.dtype) -> Tensor:
    """`x` converted to numpy dtype `dtype` through the `cast` primitive (no-op if equal)."""
    if x.array.dtype == dtype:
        return x
    return apply(OPS["cast"], x, dtype=np.dtype(dtype))


def binary_operands(a, b):
    """Both operands as Tensors of one dtype, with PyTorch's promotion rules."""
    if isinstance(a, np.ndarray):
        a = Tensor._wrap(a)
    if isinstance(b, np.ndarray):
        b = Tensor._wrap(b)
    a_is, b_is = isinstance(a, Tensor), isinstance(b, Tensor)
    if a_is and b_is:
        if a.array.dtype != b.array.dtype:
            common = dtypes.promote(a.array.dtype, b.array.dtype)
            a, b = cast(a, common), cast(b, common)
        return a, b
    if a_is:
        b = scalar_tensor(b, a.array.dtype)
        return cast(a, b.array.dtype), b
    if b_is:
        a = scalar_tensor(a, b.array.dtype)
        return a, cast(b, a.array.dtype)
    raise TypeError(f"expected at least one Tensor operand, got {type(a).__name__} and "
                    f"{type(b).__name__}")


def shape_str(shape) -> str:
    """'2x3' like PyTorch's matmul error."""
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"
