"""Tensor methods and operators, attached to `Tensor` from one explicit table; each is a
function of the op families (so it goes through the registry), or an in-place form of one.

In-place ops follow PyTorch: refused on a leaf that requires grad while grad mode is on.
When no graph is recorded they write into the existing array (views see the change) and bump
its version counter, so a backward that saved the old values raises. When a graph is recorded
they rebind the tensor to the new result (graph edges were fixed when recorded, and the old
array stays intact for the nodes that saved it); NOTE: numpy views of the old array do not
see such an update.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.ones(2)
    >>> x.add_(1).mul_(3)
    tensor([6., 6.])
"""

from __future__ import annotations

from modelkit.authoring.device import array_module
from modelkit.authoring import dtypes
from modelkit.authoring.errors import ShapeError
from modelkit.authoring.grad_mode import no_grad, state
from modelkit.authoring.ops import elementwise as ew
from modelkit.authoring.ops import indexing, linalg, reduce, registry, shape
from modelkit.authoring.ops.common import as_tensor_operand, cast
from modelkit.authoring.ops.transfer import to_device
from modelkit.authoring.tensor import Tensor

_LEAF_IN_PLACE = ("a leaf Variable that requires grad is being used in an in-place operation.")


def in_place(self: Tensor, compute, name: str) -> Tensor:
    """Run `compute()` (an out-of-place op on self) and make `self` hold its result."""
    if state.grad_enabled and self.requires_grad and self._node is None:
        raise RuntimeError(f"{name}: {_LEAF_IN_PLACE}")
    result = compute()
    if result.array.shape != self.array.shape:
        raise ShapeError(f"{name}: output with shape {list(self.shape)} doesn't match the "
                         f"broadcast shape {list(result.shape)}")
    if result.array.dtype != self.array.dtype:
        if result.array.dtype.kind == "f" and self.array.dtype.kind != "f":
            raise RuntimeError(f"{name}: result type {result.dtype} can't be cast to the "
                               f"desired output type {self.dtype}")
        result = cast(result, self.array.dtype)
    if result._node is not None:
        # the old array stays intact for the nodes that saved it; self now names the result
        self.array, self._version = result.array, result._version
        self._node, self._index, self.requires_grad = result._node, result._index, True
    else:
        array_module(self.array).copyto(self.array, result.array)
        self._version[0] += 1
    if registry.tracer is not None:
        registry.tracer(registry.INPLACE_ASSIGN, (result,), {}, (self,))
    return self


def _in_place_method(name, fn):
    def method(self, *args, **kwargs):
        return in_place(self, lambda: fn(self, *args, **kwargs), name)
    method.__name__ = name
    method.__doc__ = f"In-place form of `{fn.__name__}`; returns self."
    return method


def _setitem(self, key, value):
    recording = state.grad_enabled and (
        self.requires_grad or (isinstance(value, Tensor) and value.requires_grad))
    if recording:
        in_place(self, lambda: indexing.index_put(self, key, value), "__setitem__")
        return
    if registry.tracer is not None:
        in_place(self, lambda: indexing.index_put(self, key, value), "__setitem__")
        return
    self.array[indexing.normalize_key(key, self.array.shape)] = (
        value.array if isinstance(value, Tensor) else value)
    self._version[0] += 1


def _fill_(self, value):
    """Fill with `value` in place."""
    value = value.item() if isinstance(value, Tensor) else value
    return in_place(self, lambda: ew.add(ew.mul(self, 0), value) if self.requires_grad
                    else _constant_like(self, value), "fill_")


def _constant_like(self, value):
    return Tensor._wrap(array_module(self.array).full(self.array.shape, value,
                                                      dtype=self.array.dtype))


def _zero_(self):
    """Fill with zeros in place."""
    return _fill_(self, 0)


def _copy_(self, src, non_blocking=False):
    """Copy `src`'s values (broadcast, cast to self's dtype) into self."""
    src = to_device(as_tensor_operand(src), self.device)  # copy_ crosses devices, as in torch
    return in_place(self, lambda: cast(shape.expand(src, self.array.shape), self.array.dtype)
                    if src.array.shape != self.array.shape else cast(src, self.array.dtype),
                    "copy_")


def _uniform_(self, a=0.0, b=1.0):
    """Fill with uniform samples in [a, b) from the global generator."""
    from modelkit.authoring.creation import rand
    with no_grad():
        return _copy_(self, rand(self.array.shape, dtype=self.dtype, device=self.device) * (b - a) + a)


def _normal_(self, mean=0.0, std=1.0):
    """Fill with normal samples from the global generator."""
    from modelkit.authoring.creation import randn
    with no_grad():
        return _copy_(self, randn(self.array.shape, dtype=self.dtype, device=self.device) * std + mean)


def _to(self, *args, **kwargs):
    """to(dtype), to(device), to(device, dtype), to(other); returns self when nothing changes."""
    dtype = kwargs.pop("dtype", None)
    device = kwargs.pop("device", None)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    for arg in args:
        if isinstance(arg, Tensor):
            dtype = arg.dtype
        elif isinstance(arg, dtypes.dtype) or (isinstance(arg, type) and arg in (float, int,
                                                                               bool)):
            dtype = arg
        elif arg is not None:
            device = arg
    moved = self if device is None else to_device(self, device)
    return moved if dtype is None else cast(moved, dtypes.from_any(dtype).numpy)


def _cast_method(dtype):
    def method(self):
        return cast(self, dtype.numpy)
    method.__name__ = dtype.name
    method.__doc__ = f"This tensor as {dtype!r}."
    return method


def _where_method(self, condition, other):
    return ew.where(condition, self, other)


def _reflect(fn):
    def method(self, other):
        return fn(other, self)
    return method


def _new(maker):
    def method(self, *args, dtype=None, device=None, requires_grad=False, **kwargs):
        return maker(*args, dtype=dtype or self.dtype,
                     device=device if device is not None else self.device,
                     requires_grad=requires_grad, **kwargs)
    return method


def _type_as(self, other):
    return cast(self, other.array.dtype)


def _view_as(self, other):
    return shape.reshape(self, other.array.shape)


def _bind():
    from modelkit.authoring import creation
    from modelkit.authoring.nn import functional
    methods = {
        # operators
        "__add__": ew.add, "__radd__": _reflect(ew.add), "__sub__": ew.sub,
        "__rsub__": _reflect(ew.sub), "__mul__": ew.mul, "__rmul__": _reflect(ew.mul),
        "__truediv__": ew.div, "__rtruediv__": _reflect(ew.div),
        "__floordiv__": ew.floor_divide, "__rfloordiv__": _reflect(ew.floor_divide),
        "__mod__": ew.remainder, "__rmod__": _reflect(ew.remainder),
        "__pow__": ew.pow, "__rpow__": _reflect(ew.pow),
        "__matmul__": linalg.matmul, "__rmatmul__": _reflect(linalg.matmul),
        "__neg__": ew.neg, "__pos__": lambda self: self, "__abs__": ew.abs,
        "__eq__": ew.eq, "__ne__": ew.ne, "__lt__": ew.lt, "__le__": ew.le, "__gt__": ew.gt,
        "__ge__": ew.ge, "__and__": ew.logical_and, "__or__": ew.logical_or,
        "__xor__": ew.logical_xor, "__invert__": ew.logical_not,
        "__getitem__": indexing.getitem, "__setitem__": _setitem,
        # elementwise
        "add": ew.add, "sub": ew.sub, "subtract": ew.sub, "mul": ew.mul, "multiply": ew.mul,
        "div": ew.div, "divide": ew.div, "true_divide": ew.true_divide,
        "floor_divide": ew.floor_divide, "remainder": ew.remainder, "pow": ew.pow,
        "neg": ew.neg, "negative": ew.neg, "exp": ew.exp, "log": ew.log, "log1p": ew.log1p,
        "sqrt": ew.sqrt, "rsqrt": ew.rsqrt, "abs": ew.abs, "sign": ew.sign, "floor": ew.floor,
        "ceil": ew.ceil, "round": ew.round, "sin": ew.sin, "cos": ew.cos, "tanh": ew.tanh,
        "sigmoid": ew.sigmoid, "relu": ew.relu, "erf": ew.erf, "reciprocal": ew.reciprocal,
        "square": ew.square, "clamp": ew.clamp, "clip": ew.clamp, "maximum": ew.maximum,
        "minimum": ew.minimum, "where": _where_method, "masked_fill": ew.masked_fill,
        "eq": ew.eq, "ne": ew.ne, "lt": ew.lt, "le": ew.le, "gt": ew.gt, "ge": ew.ge,
        "logical_and": ew.logical_and, "logical_or": ew.logical_or,
        "logical_xor": ew.logical_xor, "logical_not": ew.logical_not, "isnan": ew.isnan,
        "isinf": ew.isinf, "isfinite": ew.isfinite,
        # reductions
        "sum": reduce.sum, "mean": reduce.mean, "max": reduce.max, "min": reduce.min,
        "amax": reduce.amax, "amin": reduce.amin, "argmax": reduce.argmax,
        "argmin": reduce.argmin, "var": reduce.var, "std": reduce.std, "prod": reduce.prod,
        "logsumexp": reduce.logsumexp, "cumsum": reduce.cumsum, "all": reduce.all,
        "any": reduce.any,
        # linear algebra and shape
        "matmul": linalg.matmul, "mm": linalg.matmul, "bmm": linalg.matmul,
        "reshape": shape.reshape, "view": shape.view, "view_as": _view_as,
        "reshape_as": _view_as, "flatten": shape.flatten, "permute": shape.permute,
        "transpose": shape.transpose, "swapaxes": shape.transpose, "t": shape.t,
        "unsqueeze": shape.unsqueeze, "squeeze": shape.squeeze, "expand": shape.expand,
        "expand_as": shape.expand_as, "repeat": shape.repeat, "split": shape.split,
        "chunk": shape.chunk, "unbind": shape.unbind, "clone": shape.clone,
        "contiguous": shape.contiguous,
        # indexing
        "index_select": indexing.index_select, "gather": indexing.gather,
        "nonzero": indexing.nonzero,
        # nn
        "softmax": functional.softmax, "log_softmax": functional.log_softmax,
        # dtype / device
        "to": _to, "type_as": _type_as, "float": _cast_method(dtypes.float32),
        "double": _cast_method(dtypes.float64), "half": _cast_method(dtypes.float16),
        "int": _cast_method(dtypes.int32), "long": _cast_method(dtypes.int64),
        "bool": _cast_method(dtypes.bool_),
        "new_zeros": _new(creation.zeros), "new_ones": _new(creation.ones),
        "new_empty": _new(creation.empty), "new_full": _new(creation.full),
        # in place
        "fill_": _fill_, "zero_": _zero_, "copy_": _copy_, "uniform_": _uniform_,
        "normal_": _normal_,
    }
    for name in ("add", "sub", "mul", "div", "pow", "clamp", "masked_fill", "relu", "sigmoid",
                 "tanh", "exp", "neg", "sqrt", "abs", "floor_divide", "remainder"):
        methods[name + "_"] = _in_place_method(name + "_", methods[name])
    methods["clip_"] = methods["clamp_"]
    for op_name, method_name in (("add", "__iadd__"), ("sub", "__isub__"), ("mul", "__imul__"),
                                 ("div", "__itruediv__"), ("pow", "__ipow__"),
                                 ("floor_divide", "__ifloordiv__")):
        methods[method_name] = _in_place_method(method_name, methods[op_name])
    for name, fn in methods.items():
        setattr(Tensor, name, fn)
    Tensor.T = property(lambda self: shape.permute(self, tuple(range(self.array.ndim))[::-1]))
    Tensor.mT = property(lambda self: shape.transpose(self, -2, -1))


_bind()
