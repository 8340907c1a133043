"""Shape primitives (reshape, permute, expand, squeeze, unsqueeze, cat, split, repeat, pad,
clone) and the public shape functions derived from them.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.arange(6.0).reshape(2, 3)
    >>> x.permute(1, 0).shape, mk.cat([x, x], dim=1).shape
    (modelkit.Size([3, 2]), modelkit.Size([2, 6]))
"""

from __future__ import annotations

import numbers

import numpy as np

from modelkit.authoring import dtypes
from modelkit.authoring.device import array_module
from modelkit.authoring.errors import ShapeError
from modelkit.authoring.ops.common import cast, check_dim, scatter_add, unbroadcast
from modelkit.authoring.ops.registry import OPS, Attr, Onnx, apply, primitive
from modelkit.authoring.tensor import Tensor


def _reshape_back(c, g):
    return (g.reshape(c.arrays[0].shape),)


primitive("reshape", onnx=Onnx("Reshape", inputs_from_attrs=("shape",)), saves_inputs=False)(
    lambda xp, x, shape: xp.reshape(x, shape)).vjp(_reshape_back)
primitive("squeeze", onnx=(Onnx("Squeeze", {"axes": Attr("dim")}),
                          Onnx("Squeeze", inputs_from_attrs=("dim",), since=13)),
          saves_inputs=False)(lambda xp, x, dim: xp.squeeze(x, axis=dim)).vjp(_reshape_back)
primitive("unsqueeze", onnx=(Onnx("Unsqueeze", {"axes": Attr("dim")}),
                            Onnx("Unsqueeze", inputs_from_attrs=("dim",), since=13)),
          saves_inputs=False)(lambda xp, x, dim: xp.expand_dims(x, dim)).vjp(_reshape_back)
primitive("clone", onnx=Onnx("Identity"), saves_inputs=False)(
    lambda xp, x: x.copy()).vjp(lambda c, g: (g,))


@primitive("permute", onnx=Onnx("Transpose", {"perm": Attr("dims")}), saves_inputs=False)
def _permute(xp, x, dims):
    return xp.transpose(x, dims)


@_permute.vjp
def _permute_vjp(c, g):
    return (array_module(g).transpose(g, tuple(np.argsort(c.attrs["dims"]).tolist())),)


@primitive("expand", onnx=Onnx("Expand", inputs_from_attrs=("shape",), since=8),
           saves_inputs=False)
def _expand(xp, x, shape):
    return xp.broadcast_to(x, shape)


@_expand.vjp
def _expand_vjp(c, g):
    return (unbroadcast(g, c.arrays[0].shape),)


@primitive("cat", onnx=Onnx("Concat", {"axis": Attr("dim")}), saves_inputs=False)
def _cat(xp, *arrays, dim):
    return xp.concatenate(arrays, axis=dim)


@_cat.vjp
def _cat_vjp(c, g):
    bounds = np.cumsum([a.shape[c.attrs["dim"]] for a in c.arrays])[:-1].tolist()
    return tuple(array_module(g).split(g, bounds, axis=c.attrs["dim"]))


@primitive("split", onnx=(Onnx("Split", {"axis": Attr("dim"), "split": Attr("sizes")}, since=2),
                         Onnx("Split", {"axis": Attr("dim")}, inputs_from_attrs=("sizes",),
                              since=13)), n_outputs=None, saves_inputs=False)
def _split(xp, x, sizes, dim):
    return tuple(xp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=dim))


@_split.vjp
def _split_vjp(c, *grads):
    return (array_module(grads[0]).concatenate(grads, axis=c.attrs["dim"]),)


@primitive("repeat", onnx=Onnx("Tile", inputs_from_attrs=("repeats",), since=6),
           saves_inputs=False)
def _repeat(xp, x, repeats):
    x = x.reshape((1,) * (len(repeats) - x.ndim) + x.shape)
    return xp.tile(x, repeats)


@_repeat.vjp
def _repeat_vjp(c, g):
    x, repeats = c.arrays[0], c.attrs["repeats"]
    padded = (1,) * (len(repeats) - x.ndim) + x.shape
    interleaved = [v for r, s in zip(repeats, padded) for v in (r, s)]
    summed = g.reshape(interleaved).sum(axis=tuple(range(0, 2 * len(repeats), 2)))
    return (summed.reshape(x.shape),)


_NUMPY_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
                    "circular": "wrap"}


@primitive("pad", onnx=(Onnx("Pad", {"mode": Attr("mode"), "pads": Attr("pads"),
                                     "value": Attr("value")}, since=2),
                       Onnx("Pad", {"mode": Attr("mode")}, inputs_from_attrs=("pads", "value"),
                            since=11)), saves_inputs=False)
def _pad(xp, x, pads, mode, value):
    """`pads`: ONNX order [begin_0, ..., begin_n, end_0, ..., end_n]; `mode`: ONNX name."""
    n = x.ndim
    widths = list(zip(pads[:n], pads[n:]))
    if mode == "constant":
        return xp.pad(x, widths, mode="constant", constant_values=value)
    return xp.pad(x, widths, mode=mode)


@_pad.vjp
def _pad_vjp(c, g):
    x, pads, mode, xp = c.arrays[0], c.attrs["pads"], c.attrs["mode"], array_module(g)
    n = x.ndim
    for axis in range(n):
        before, after = pads[axis], pads[axis + n]
        if before == 0 and after == 0:
            continue
        size = x.shape[axis]
        if mode == "constant":
            g = g[(slice(None),) * axis + (slice(before, before + size),)]
            continue
        # where each padded position reads from: accumulate the gradient back there
        source = xp.asarray(np.pad(np.arange(size), (before, after), mode=mode))
        shape = list(g.shape)
        shape[axis] = size
        folded = xp.zeros(shape, dtype=g.dtype)
        scatter_add(folded, (slice(None),) * axis + (source,), g)
        g = folded
    return (g,)


# ---- public functions ----------------------------------------------------------------------
def _shape_arg(shape):
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(input, *shape):  # noqa: A002
    """Same data, new shape; one dim may be -1 (inferred).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.reshape(mk.arange(6), (2, -1)).shape
        modelkit.Size([2, 3])
    """
    shape = _shape_arg(shape)
    size = input.array.size
    known = int(np.prod([s for s in shape if s != -1])) if shape else 1
    if shape.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    if (shape.count(-1) == 0 and known != size) or (shape.count(-1) == 1 and
                                                    (known == 0 or size % known)):
        raise ShapeError(f"reshape: shape '{list(shape)}' is invalid for input of size {size} "
                         f"(input shape {tuple(input.shape)})")
    return apply(OPS["reshape"], input, shape=shape)


def view(input, *shape):  # noqa: A002
    """Alias of reshape (every array here can be viewed).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.ones(4).view(2, 2).shape
        modelkit.Size([2, 2])
    """
    if len(shape) == 1 and isinstance(shape[0], (dtypes.dtype, str, type)):
        raise NotImplementedError("view(dtype) (reinterpreting the bits) is not supported; "
                                  "use .to(dtype) to convert values")
    return reshape(input, *shape)


def flatten(input, start_dim=0, end_dim=-1):  # noqa: A002
    """Merge dims start_dim..end_dim into one.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.flatten(mk.ones(2, 3, 4), 1).shape
        modelkit.Size([2, 12])
    """
    shape = input.array.shape
    if not shape:
        return reshape(input, 1)
    start, end = check_dim(start_dim, len(shape)), check_dim(end_dim, len(shape))
    if start > end:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    return reshape(input, shape[:start] + (-1,) + shape[end + 1:])


def permute(input, *dims):  # noqa: A002
    """Reorder dimensions.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.permute(mk.ones(2, 3, 4), (2, 0, 1)).shape
        modelkit.Size([4, 2, 3])
    """
    dims = _shape_arg(dims)
    n = input.array.ndim
    if len(dims) != n:
        raise RuntimeError(f"permute: number of dimensions in the tensor input does "
                           f"not match the length of the desired ordering of dimensions i.e. "
                           f"input.dim() = {n} is not equal to len(dims) = {len(dims)}")
    dims = tuple(check_dim(d, n) for d in dims)
    if len(set(dims)) != n:
        raise RuntimeError(f"permute: repeated dim in {dims}")
    return apply(OPS["permute"], input, dims=dims)


def transpose(input, dim0, dim1):  # noqa: A002
    """Swap two dimensions.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.transpose(mk.ones(2, 3), 0, 1).shape
        modelkit.Size([3, 2])
    """
    n = input.array.ndim
    dims = list(range(n))
    a, b = check_dim(dim0, n), check_dim(dim1, n)
    dims[a], dims[b] = dims[b], dims[a]
    return apply(OPS["permute"], input, dims=tuple(dims))


swapaxes = transpose


def t(input):  # noqa: A002
    """Transpose of a tensor with at most 2 dims.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.t(mk.ones(2, 3)).shape
        modelkit.Size([3, 2])
    """
    if input.array.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input.array.ndim}D")
    return input if input.array.ndim < 2 else transpose(input, 0, 1)


def unsqueeze(input, dim):  # noqa: A002
    """Insert a size-1 dimension at `dim`.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.unsqueeze(mk.ones(3), 0).shape
        modelkit.Size([1, 3])
    """
    return apply(OPS["unsqueeze"], input, dim=check_dim(dim, input.array.ndim + 1))


def squeeze(input, dim=None):  # noqa: A002
    """Remove size-1 dimensions (all of them, or only those in `dim`).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.squeeze(mk.ones(1, 3, 1)).shape
        modelkit.Size([3])
    """
    shape = input.array.shape
    if dim is None:
        axes = tuple(i for i, s in enumerate(shape) if s == 1)
    else:
        candidates = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
        axes = tuple(sorted({check_dim(d, len(shape)) for d in candidates}))
        axes = tuple(a for a in axes if shape[a] == 1)
    if not axes:
        return input
    return apply(OPS["squeeze"], input, dim=axes)


def expand(input, *sizes):  # noqa: A002
    """Broadcast to a larger shape without copying; -1 keeps a dimension.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.ones(3, 1).expand(3, 4).shape
        modelkit.Size([3, 4])
    """
    sizes = _shape_arg(sizes)
    shape = input.array.shape
    lead = len(sizes) - len(shape)
    if lead < 0:
        raise ShapeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater "
                         f"or equal to the number of dimensions in the tensor ({len(shape)})")
    target = []
    for i, s in enumerate(sizes):
        if s == -1:
            if i < lead:
                raise ShapeError(f"expand: -1 is not allowed in a leading, non-existing "
                                 f"dimension {i}")
            s = shape[i - lead]
        elif i >= lead and shape[i - lead] != 1 and shape[i - lead] != s:
            raise ShapeError(f"expand: the expanded size of the tensor ({s}) must match the "
                             f"existing size ({shape[i - lead]}) at non-singleton dimension {i}. "
                             f"Target sizes: {list(sizes)}. Tensor sizes: {list(shape)}")
        target.append(s)
    return apply(OPS["expand"], input, shape=tuple(target))


def expand_as(input, other):  # noqa: A002
    """expand(input, other.shape).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.ones(1).expand_as(mk.zeros(3)).shape
        modelkit.Size([3])
    """
    return expand(input, other.array.shape)


def broadcast_to(input, shape):  # noqa: A002
    """expand(input, shape).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.broadcast_to(mk.ones(1), (2,)).shape
        modelkit.Size([2])
    """
    return expand(input, tuple(shape))


def _same_dtype(tensors, name):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name}(): expected a non-empty list of Tensors")
    common = tensors[0].array.dtype
    for t in tensors[1:]:
        common = dtypes.promote(common, t.array.dtype)
    return [cast(t, common) for t in tensors]


def cat(tensors, dim=0):
    """Concatenate along an existing dimension.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.cat([mk.ones(1, 2), mk.zeros(2, 2)]).shape
        modelkit.Size([3, 2])
    """
    tensors = _same_dtype(tensors, "cat")
    ndim = tensors[0].array.ndim
    d = check_dim(dim, ndim)
    for i, t in enumerate(tensors[1:], 1):
        other = t.array.shape
        first = tensors[0].array.shape
        if len(other) != ndim or any(a != b for k, (a, b) in enumerate(zip(first, other))
                                     if k != d):
            raise ShapeError(f"cat: Sizes of tensors must match except in dimension {d}; tensor "
                             f"0 has shape {tuple(first)} and tensor {i} has shape {tuple(other)}")
    return apply(OPS["cat"], *tensors, dim=d)


concat = concatenate = cat


def stack(tensors, dim=0):
    """Join along a new dimension.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.stack([mk.ones(2), mk.zeros(2)], dim=1).shape
        modelkit.Size([2, 2])
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack(): expected a non-empty list of Tensors")
    shapes = {tuple(t.array.shape) for t in tensors}
    if len(shapes) > 1:
        raise ShapeError(f"stack: expects each tensor to be equal size, but got shapes "
                         f"{[tuple(t.shape) for t in tensors]}")
    d = check_dim(dim, tensors[0].array.ndim + 1)
    return cat([unsqueeze(t, d) for t in tensors], d)


def split(tensor, split_size_or_sections, dim=0):
    """Pieces of `split_size` along `dim` (the last may be smaller), or of the given sizes.

    Example:
        >>> import modelkit.authoring as mk
        >>> [p.shape[0] for p in mk.split(mk.arange(5), 2)]
        [2, 2, 1]
    """
    d = check_dim(dim, tensor.array.ndim)
    length = tensor.array.shape[d]
    if isinstance(split_size_or_sections, numbers.Integral):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [step] * (length // step) + ([length % step] if length % step else [])
        sizes = sizes or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != length:
            raise ShapeError(f"split: split_with_sizes expects split_sizes to sum exactly to "
                             f"{length} (input tensor's size at dimension {d}), but got "
                             f"split_sizes={sizes}")
    return apply(OPS["split"], tensor, sizes=tuple(sizes), dim=d)


def chunk(input, chunks, dim=0):  # noqa: A002
    """`chunks` nearly equal pieces along `dim` (as torch.chunk: ceil-sized, maybe fewer).

    Example:
        >>> import modelkit.authoring as mk
        >>> len(mk.chunk(mk.arange(6), 3))
        3
    """
    if chunks <= 0:
        raise ValueError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    length = input.array.shape[check_dim(dim, input.array.ndim)]
    return split(input, max(-(-length // chunks), 1), dim)


def unbind(input, dim=0):  # noqa: A002
    """The slices along `dim`, each without that dimension.

    Example:
        >>> import modelkit.authoring as mk
        >>> len(mk.unbind(mk.ones(3, 2)))
        3
    """
    d = check_dim(dim, input.array.ndim)
    return tuple(squeeze(piece, d) for piece in split(input, 1, d))


def repeat(input, *repeats):  # noqa: A002
    """Tile the tensor `repeats[i]` times along dim i (extra leading repeats add dims).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.ones(2, 3).repeat(2, 1).shape
        modelkit.Size([4, 3])
    """
    repeats = _shape_arg(repeats)
    if len(repeats) < input.array.ndim:
        raise RuntimeError(f"repeat: number of repeat dims ({len(repeats)}) can not be smaller "
                           f"than number of dimensions of tensor ({input.array.ndim})")
    return apply(OPS["repeat"], input, repeats=repeats)


def pad(input, pad, mode="constant", value=None):  # noqa: A002
    """Pad the last len(pad)//2 dims: pad = (last_left, last_right, 2nd_last_left, ...), as in
    torch.nn.functional.pad; modes "constant", "reflect", "replicate", "circular".

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.nn.functional.pad(mk.ones(2, 2), (1, 1)).shape
        modelkit.Size([2, 4])
    """
    n = input.array.ndim
    pad = [int(p) for p in pad]
    if len(pad) % 2 or len(pad) // 2 > n:
        raise ValueError(f"pad: padding length must be even and at most 2 * input.dim() "
                         f"({2 * n}), got {len(pad)}")
    if mode not in _NUMPY_PAD_MODES:
        raise ValueError(f"pad: mode must be one of {sorted(_NUMPY_PAD_MODES)}, got {mode!r}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding (cropping) is not supported, got {tuple(pad)}")
    begins, ends = [0] * n, [0] * n
    for i in range(len(pad) // 2):
        begins[n - 1 - i], ends[n - 1 - i] = pad[2 * i], pad[2 * i + 1]
    if mode == "reflect":
        for axis in range(n):
            if max(begins[axis], ends[axis]) >= input.array.shape[axis]:
                raise ValueError(f"pad: reflect padding ({begins[axis]}, {ends[axis]}) must be "
                                 f"smaller than the input size {input.array.shape[axis]} of "
                                 f"dim {axis}")
    return apply(OPS["pad"], input, pads=tuple(begins + ends), mode=_NUMPY_PAD_MODES[mode],
                 value=0.0 if value is None else value)


def clone(input):  # noqa: A002
    """A copy that autograd sees as a function of `input`.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.clone(mk.ones(2))
        tensor([1., 1.])
    """
    return apply(OPS["clone"], input)


def contiguous(input):  # noqa: A002
    """The tensor itself: every numpy array is usable as-is.

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.ones(2).t().contiguous().shape
        modelkit.Size([2])
    """
    return input


def is_tensor(obj) -> bool:
    """True for Tensors (and Parameters).

    Example:
        >>> import modelkit.authoring as mk
        >>> mk.is_tensor(mk.ones(1)), mk.is_tensor([1])
        (True, False)
    """
    return isinstance(obj, Tensor)


# ---- ONNX lowerings (`g`: the exporter's emitter) -------------------------------------------
@OPS["repeat"].lowering
def _repeat_onnx(g, x, repeats):
    extra = len(repeats) - len(g.shape(x))
    if extra:  # Tile needs one repeat per dim: add the leading dims first
        x = g.op("Unsqueeze", x, g.ints(range(extra))) if g.opset >= 13 else \
            g.op("Unsqueeze", x, axes=list(range(extra)))
    return g.op("Tile", x, g.attr_ints("repeats"))
