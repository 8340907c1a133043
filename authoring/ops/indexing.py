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

from modelkit.authoring.device import array_module
from modelkit.authoring.errors import DTypeError, ShapeError
from modelkit.authoring.ops.common import (cast, check_dim, scatter_add,
                                           scalar_tensor, unbroadcast)
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
    gx = array_module(g).zeros(x.shape, dtype=g.dtype)
    if _is_advanced(key):
        scatter_add(gx, key, g)
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
    gx = array_module(g).zeros(x.shape, dtype=g.dtype)
    scatter_add(gx, (slice(None),) * dim + (index,), g)
    return gx, None


@primitive("gather", onnx=Onnx("GatherElements", {"axis": Attr("dim")}, since=11))
def _gather(xp, x, index, dim):
    return xp.take_along_axis(x, index, axis=dim)


@_gather.vjp
def _gather_vjp(c, g):
    x, index = c.arrays
    dim = c.attrs["dim"]
    xp = array_module(g)
    positions = list(xp.ogrid[tuple(slice(s) for s in index.shape)])
    positions[dim] = index
    gx = xp.zeros(x.shape, dtype=g.dtype)
    scatter_add(gx, tuple(positions), g)
    return gx, None


@primitive("embedding", onnx=Onnx("Gather", {"axis": 0}))
def _embedding(xp, weight, indices, padding_idx=None):
    return xp.take(weight, indices, axis=0)


@_embedding.vjp
def _embedding_vjp(c, g):
    weight, indices = c.arrays
    gw = array_module(g).zeros(weight.shape, dtype=g.dtype)
    scatter_add(gw, indices.reshape(-1), g.reshape(-1, weight.shape[1]))
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
            Tensor._wrap(array_module(input.array).asarray(values, dtype=input.array.dtype))
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


# ---- ONNX lowerings (`g`: the exporter's emitter) -------------------------------------------
_INT64_MAX = np.iinfo(np.int64).max


def _full_key(g, key, rank):
    """`key` with Ellipsis expanded and trailing full slices, one entry per input dim + Nones."""
    if any(isinstance(k, np.ndarray) and k.dtype == np.bool_ for k in key):
        g.fail("indexing with a Python bool (x[True]) cannot be exported")
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    full = []
    for k in key:
        full.extend([slice(None)] * (rank - consumed) if k is Ellipsis else [k])
    used = sum(1 for k in full if k is not None)
    return full + [slice(None)] * (rank - used)


@_index.lowering
def _index_onnx(g, x, key):
    """Slice for the slices, then Gather (one int or index array), GatherND (several index
    arrays, numpy's placement of the result dims), Unsqueeze for the Nones."""
    shape = g.shape(x)
    key = _full_key(g, key, len(shape))
    probe_key = _full_key(g, g.probe_attrs.get("key", key), len(shape))
    slices, points, arrays, nones, axis = [], [], [], [], 0
    for k, probe in zip(key, probe_key):
        if k is None:
            nones.append(axis - len(points) + len(nones))
            continue
        if isinstance(k, slice):
            if k != slice(None):
                slices.append((axis, k, probe))
        elif isinstance(k, numbers.Integral):
            points.append((axis, g.sized(k, probe) if k >= 0 else k))
        else:
            arrays.append((axis, k))
        axis += 1
    y = x
    if slices:
        starts = [g.sized(s.start or 0, p.start or 0) for _, s, p in slices]
        ends = [_INT64_MAX if s.stop is None else g.sized(s.stop, p.stop) for _, s, p in slices]
        y = g.op("Slice", y, g.ints(starts), g.ints(ends), g.ints([a for a, _, _ in slices]),
                 g.ints([s.step or 1 for _, s, _ in slices]))
    if arrays:
        if nones or not all(isinstance(v, numbers.Integral) for _, v in points):
            g.fail("indexing that mixes index arrays with None or with a dynamic-size int "
                   "cannot be exported")
        return _advanced_index(g, y, shape, arrays + [(a, np.array(v)) for a, v in points])
    for axis, point in sorted(points, key=lambda p: -p[0]):
        index = g.const(np.array(point, np.int64)) if isinstance(point, numbers.Integral) else \
            g.op("Squeeze", point)
        y = g.op("Gather", y, index, axis=axis)
    if nones:
        y = g.op("Unsqueeze", y, g.ints(nones)) if g.opset >= 13 else \
            g.op("Unsqueeze", y, axes=nones)
    return y


def _advanced_index(g, y, shape, arrays):
    arrays = sorted(arrays, key=lambda p: p[0])
    if len(arrays) == 1:
        axis, index = arrays[0]
        traced = g.traced(index)
        return g.op("Gather", y, traced if traced is not None else
                    g.const((index % shape[axis]).astype(np.int64)), axis=axis)
    if any(g.traced(index) is not None for _, index in arrays):
        g.fail("indexing with several index tensors computed in forward cannot be exported; "
               "use index_select or gather")
    axes = [a for a, _ in arrays]
    indices = np.stack(np.broadcast_arrays(*[index % shape[a] for a, index in arrays]), -1)
    others = [d for d in range(len(shape)) if d not in axes]
    if axes + others != list(range(len(shape))):
        y = g.op("Transpose", y, perm=axes + others)
    y = g.op("GatherND", y, g.const(indices.astype(np.int64)))
    # numpy puts the index dims where the (adjacent) indexed axes were, else first
    first, n_index = axes[0], indices.ndim - 1
    if axes == list(range(first, first + len(axes))) and first > 0:
        perm = list(range(n_index, n_index + first)) + list(range(n_index)) + \
            list(range(n_index + first, n_index + len(others)))
        y = g.op("Transpose", y, perm=perm)
    return y


@_index_put.lowering
def _index_put_onnx(g, x, values, key):
    if g.is_dynamic(x):
        g.fail("x[key] = value on a tensor with a dynamic axis cannot be exported; build the "
               "result with torch-style ops (cat, where, masked_fill) instead")
    shape = g.shape(x)
    # flat positions of the assigned elements (at least 1-D: ScatterND wants a batch of them)
    positions = np.atleast_1d(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[key])
    indices = np.stack(np.unravel_index(positions, shape), axis=-1).astype(np.int64)
    updates = g.op("Expand", values, g.ints(positions.shape))
    return g.op("ScatterND", x, g.const(indices), updates)


@_one_hot.lowering
def _one_hot_onnx(g, indices, num_classes):
    return g.op("OneHot", indices, g.const(np.array(num_classes, np.int64)),
                g.const(np.array([0, 1], np.int64)), axis=-1)


@_nonzero.lowering
def _nonzero_onnx(g, x):
    return g.op("Transpose", g.op("NonZero", x), perm=[1, 0])  # ONNX gives (ndim, N)
