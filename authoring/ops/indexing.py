"""Indexing primitives: `x[key]` (slices, ints, None, Ellipsis, integer arrays, boolean
masks), `x[key] = v`, index_select, gather, embedding, one_hot, nonzero. Backward scatters
with np.add.at, so repeated indices accumulate.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.arange(6.0).reshape(2, 3)
    >>> x[:, mk.tensor([0, 0])]
    tensor([[0., 0.],
            [3., 3.]])
"""

from __future__ import annotations

import numbers

import numpy as np

from modelkit.authoring.errors import DTypeError, ShapeError
from modelkit.authoring.ops.common import cast, check_dim, scalar_tensor, unbroadcast
from modelkit.authoring.ops.registry import OPS, Attr, Onnx, apply, primitive
from modelkit.authoring.tensor import Tensor


def _is_advanced(key) -> bool:
    return any(isinstance(k, np.ndarray) for k in key)


@primitive("index")
def _index(xp, x, key):
    """`key` is a normalised tuple (see `normalize_key`). Lowered by the exporter to
    Slice / Squeeze / Unsqueeze / Gather / GatherND depending on its parts."""
    return x[key]


@_index.vjp
def _index_vjp(c, g):
    x, key = c.arrays[0], c.attrs["key"]
    gx = np.zeros(x.shape, dtype=g.dtype)
    if _is_advanced(key):
        np.add.at(gx, key, g)
    else:
        gx[key] = g
    return (gx,)


@primitive("index_put", onnx=None)
def _index_put(xp, x, values, key):
    out = x.copy()
    out[key] = values
    return out


@_index_put.vjp
def _index_put_vjp(c, g):
    key = c.attrs["key"]
    gx = None
    if c.needs_input_grad[0]:
        gx = g.copy()
        gx[key] = 0
    gv = unbroadcast(g[key], c.arrays[1].shape) if c.needs_input_grad[1] else None
    return gx, gv


@primitive("index_select", onnx=Onnx("Gather", {"axis": Attr("dim")}))
def _index_select(xp, x, index, dim):
    return xp.take(x, index, axis=dim)


@_index_select.vjp
def _index_select_vjp(c, g):
    x, index = c.arrays
    dim = c.attrs["dim"]
    gx = np.zeros(x.shape, dtype=g.dtype)
    np.add.at(gx, (slice(None),) * dim + (index,), g)
    return gx, None


@primitive("gather", onnx=Onnx("GatherElements", {"axis": Attr("dim")}, since=11))
def _gather(xp, x, index, dim):
    return xp.take_along_axis(x, index, axis=dim)


@_gather.vjp
def _gather_vjp(c, g):
    x, index = c.arrays
    dim = c.attrs["dim"]
    positions = list(np.ogrid[tuple(slice(s) for s in index.shape)])
    positions[dim] = index
    gx = np.zeros(x.shape, dtype=g.dtype)
    np.add.at(gx, tuple(positions), g)
    return gx, None


@primitive("embedding", onnx=Onnx("Gather", {"axis": 0}))
def _embedding(xp, weight, indices, padding_idx=None):
    return xp.take(weight, indices, axis=0)


@_embedding.vjp
def _embedding_vjp(c, g):
    weight, indices = c.arrays
    gw = np.zeros(weight.shape, dtype=g.dtype)
    np.add.at(gw, indices.reshape(-1), g.reshape(-1, weight.shape[1]))
    if c.attrs.get("padding_idx") is not None:
        gw[c.attrs["padding_idx"]] = 0
    return gw, None


@primitive("one_hot", onnx=Onnx("OneHot", {"axis": -1}, inputs_from_attrs=("num_classes",),
                                since=9))
def _one_hot(xp, indices, num_classes):
    return (indices[..., None] == xp.arange(num_classes)).astype(np.int64)


@primitive("nonzero", onnx=Onnx("NonZero", since=9))
def _nonzero(xp, x):
    return xp.stack(xp.nonzero(x), axis=-1).astype(np.int64)


# ---- public functions ----------------------------------------------------------------------
def _index_array(value, position) -> np.ndarray:
    array = value.array if isinstance(value, Tensor) else np.asarray(value)
    if array.dtype.kind not in "biu":
        raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors "
                         f"(index {position} has dtype {array.dtype})")
    return array


def normalize_key(key, shape) -> tuple:
    """A Python indexing key as a tuple numpy understands: Tensors and lists become integer
    arrays, boolean masks become their nonzero() index arrays (so backward can use add.at)."""
    key = key if isinstance(key, tuple) else (key,)
    normalized = []
    for position, k in enumerate(key):
        if k is None or k is Ellipsis or isinstance(k, slice):
            if isinstance(k, slice) and k.step is not None and int(k.step) <= 0:
                raise ValueError("step must be greater than zero")
            normalized.append(k)
        elif isinstance(k, (bool, np.bool_)):
            normalized.append(np.array(k))
        elif isinstance(k, numbers.Integral):
            normalized.append(int(k))
        elif isinstance(k, (Tensor, np.ndarray, list, tuple)):
            array = _index_array(k, position)
            if array.dtype == np.bool_ and array.ndim > 0:
                normalized.extend(array.nonzero())
            else:
                normalized.append(array.astype(np.intp, copy=False))
        else:
            raise IndexError(f"only integers, slices (`:`), ellipsis (`...`), None and long or "
                             f"byte Variables are valid indices (got {type(k).__name__})")
    return tuple(normalized)


def getitem(input, key):  # noqa: A002
    """input[key] with PyTorch/numpy semantics.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.arange(4)[1:3]
        tensor([1, 2])
    """
    return apply(OPS["index"], input, key=normalize_key(key, input.array.shape))


def index_put(input, key, values):  # noqa: A002
    """Out-of-place `input[key] = values` (what `__setitem__` records for autograd).

    Example:
        >>> import modelkit.authoring as mk
        >>> index_put(mk.zeros(3), 1, mk.tensor(5.0))
        tensor([0., 5., 0.])
    """
    if not isinstance(values, Tensor):
        values = scalar_tensor(values, input.array.dtype) if np.isscalar(values) else \
            Tensor._wrap(np.asarray(values, dtype=input.array.dtype))
    return apply(OPS["index_put"], input, cast(values, input.array.dtype),
                 key=normalize_key(key, input.array.shape))


def _check_index_tensor(index, op):
    if not isinstance(index, Tensor):
        raise TypeError(f"{op}(): index must be a Tensor, got {type(index).__name__}")
    if index.array.dtype.kind not in "iu":
        raise DTypeError(f"{op}(): Expected dtype int64 for index, got {index.dtype}")


def index_select(input, dim, index):  # noqa: A002
    """The entries of `index` along `dim`.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.index_select(mk.arange(6).reshape(2, 3), 1, mk.tensor([2, 0]))
        tensor([[2, 0],
                [5, 3]])
    """
    _check_index_tensor(index, "index_select")
    if index.array.ndim > 1:
        raise IndexError(f"index_select(): Index is supposed to be a vector, got shape "
                         f"{tuple(index.shape)}")
    d = check_dim(dim, input.array.ndim)
    size = input.array.shape[d]
    if index.array.size and (index.array.max() >= size or index.array.min() < -size):
        raise IndexError(f"index_select(): index out of range in self: dim {d} has size {size}, "
                         f"index holds values in [{index.array.min()}, {index.array.max()}]")
    return apply(OPS["index_select"], input, index, dim=d)


def gather(input, dim, index):  # noqa: A002
    """out[i][j] = input[index[i][j]][j] for dim=0 (and so on), like torch.gather.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.gather(mk.tensor([[1, 2], [3, 4]]), 1, mk.tensor([[1], [0]]))
        tensor([[2],
                [3]])
    """
    _check_index_tensor(index, "gather")
    d = check_dim(dim, input.array.ndim)
    if index.array.ndim != input.array.ndim:
        raise ShapeError(f"gather(): Index tensor must have the same number of dimensions as "
                         f"input tensor (input shape {tuple(input.shape)}, index shape "
                         f"{tuple(index.shape)})")
    return apply(OPS["gather"], input, index, dim=d)


def embedding(input, weight, padding_idx=None):  # noqa: A002
    """Rows of `weight` picked by the integer tensor `input` (torch.nn.functional.embedding).

    Example:
        >>> import modelkit.authoring as mk
        >>> embedding(mk.tensor([[0, 2]]), mk.eye(3)).shape
        modelkit.Size([1, 2, 3])
    """
    _check_index_tensor(input, "embedding")
    rows = weight.array.shape[0]
    if input.array.size and (input.array.max() >= rows or input.array.min() < 0):
        raise IndexError(f"embedding: index out of range in self (indices in "
                         f"[{input.array.min()}, {input.array.max()}], weight has {rows} rows)")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += rows
    return apply(OPS["embedding"], weight, input, padding_idx=padding_idx)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding with a new last dimension of size num_classes (default max + 1).

    Example:
        >>> import modelkit.authoring as mk
        >>> one_hot(mk.tensor([0, 2]), 3)
        tensor([[1, 0, 0],
                [0, 0, 1]])
    """
    _check_index_tensor(tensor, "one_hot")
    if num_classes == -1:
        num_classes = int(tensor.array.max()) + 1 if tensor.array.size else 0
    if tensor.array.size and (tensor.array.min() < 0 or tensor.array.max() >= num_classes):
        raise RuntimeError(f"one_hot: Class values must be in [0, {num_classes})")
    return apply(OPS["one_hot"], tensor, num_classes=int(num_classes))


def nonzero(input, *, as_tuple=False):  # noqa: A002
    """Indices of the non-zero elements: an (N, ndim) int64 tensor, or a tuple of 1-D ones.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.nonzero(mk.tensor([0, 3, 4]))
        tensor([[1],
                [2]])
    """
    result = apply(OPS["nonzero"], input)
    if as_tuple:
        return tuple(getitem(result, (slice(None), i)) for i in range(input.array.ndim))
    return result
