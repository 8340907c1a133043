"""`Tensor`: one array (numpy on the cpu, cupy on cuda) plus what autograd needs (requires_grad, grad, the node that made it).

Arithmetic, reductions, shape ops and the rest are attached in `ops/methods.py`; every one goes
through the op registry. The array itself is `tensor.array` (shared, not copied);
`tensor.data` is a detached Tensor on the same array, as in PyTorch.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.tensor([[1.0, 2.0]], requires_grad=True)
    >>> x
    tensor([[1., 2.]], requires_grad=True)
    >>> x.shape, x.dtype, x.device
    (modelkit.Size([1, 2]), modelkit.float32, device(type='cpu'))
"""

from __future__ import annotations

import numpy as np

from modelkit.authoring import dtypes
from modelkit.authoring.device import CPU, array_device, array_module
from modelkit.authoring.ops import registry


_new_tensor = object.__new__


class Size(tuple):
    """A tensor's shape: a tuple of ints, printed like PyTorch's torch.Size.

    Example:
        >>> Size((2, 3)), Size((2, 3)).numel()
        (modelkit.Size([2, 3]), 6)
    """

    __slots__ = ()

    def __repr__(self):
        return f"modelkit.Size([{', '.join(str(d) for d in self)}])"

    def numel(self) -> int:
        n = 1
        for d in self:
            n *= d
        return n


class Tensor:
    """An n-dimensional array that can record the operations applied to it for autograd.

    `Tensor(data)` builds a float32 tensor like `torch.Tensor(data)`; prefer `mk.tensor`.
    """

    __slots__ = ("array", "requires_grad", "grad", "_node", "_index", "_version", "_hooks",
                 "_retains_grad", "__weakref__")
    __array_priority__ = 1000
    __array_ufunc__ = None  # numpy defers to our reflected operators: `np_array + tensor` works

    def __init__(self, data=(), requires_grad=False):
        if isinstance(data, Tensor):  # stays on data's device, as torch.Tensor(t) does
            self.array = array_module(data.array).array(data.array, dtype=np.float32)
        else:
            self.array = np.array(data, dtype=np.float32)
        self.requires_grad = False
        self.grad = None
        self._node = None
        self._index = 0
        self._version = [0]
        self._hooks = None
        self._retains_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _wrap(array, node=None, index=0):
        """The Tensor for an op's output array (no copy); internal."""
        t = _new_tensor(Tensor)
        t.array = array
        if node is not None and array.dtype.kind == "f":
            t.requires_grad, t._node = True, node
        else:
            t.requires_grad, t._node = False, None
        t.grad = None
        t._index = index
        t._version = [0]
        t._hooks = None
        t._retains_grad = False
        return t

    # ---- metadata -------------------------------------------------------------------------
    @property
    def shape(self) -> Size:
        return Size(self.array.shape)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def dim(self) -> int:
        """Number of dimensions.

        Example:
            >>> Tensor([[1.0]]).dim()
            2
        """
        return self.array.ndim

    def size(self, dim=None):
        """The shape, or the length of dimension `dim` (negative counts from the end).

        Example:
            >>> Tensor([[1.0, 2.0]]).size(-1)
            2
        """
        if dim is None:
            return Size(self.array.shape)
        return self.array.shape[_check_dim(dim, self.array.ndim)]

    def numel(self) -> int:
        """Number of elements.

        Example:
            >>> Tensor([[1.0, 2.0]]).numel()
            2
        """
        return int(self.array.size)

    def element_size(self) -> int:
        """Bytes per element.

        Example:
            >>> Tensor([1.0]).element_size()
            4
        """
        return self.array.itemsize

    @property
    def dtype(self) -> dtypes.dtype:
        return dtypes.from_numpy(self.array.dtype)

    @property
    def device(self):
        return CPU if isinstance(self.array, np.ndarray) else array_device(self.array)

    @property
    def is_cuda(self) -> bool:
        return not isinstance(self.array, np.ndarray)

    def is_floating_point(self) -> bool:
        """True for float16/32/64 tensors.

        Example:
            >>> Tensor([1.0]).is_floating_point()
            True
        """
        return self.array.dtype.kind == "f"

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self):
        return self._node

    @property
    def data(self) -> "Tensor":
        """A detached Tensor on the same array (PyTorch's `.data`)."""
        return self.detach()

    @data.setter
    def data(self, value: "Tensor"):
        self.array = value.array if isinstance(value, Tensor) else np.asarray(value)

    # ---- conversions ----------------------------------------------------------------------
    def item(self):
        """The single value as a Python number.

        Example:
            >>> Tensor([2.5]).item()
            2.5
        """
        if self.array.size != 1:
            raise RuntimeError(f"a Tensor with {self.array.size} elements cannot be converted "
                               "to Scalar")
        return self.array.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The array itself (shared, not copied); refused while the tensor requires grad, and
        for a cuda tensor (copy it to the host with `.cpu()` first).

        Example:
            >>> Tensor([1.0]).numpy()
            array([1.], dtype=float32)
        """
        if not isinstance(self.array, np.ndarray):
            raise TypeError(_host_only(self, "numpy"))
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        return self.array

    def tolist(self):
        """Nested Python lists of Python numbers.

        Example:
            >>> Tensor([[1.0]]).tolist()
            [[1.0]]
        """
        return self.array.tolist()

    def __array__(self, dtype=None, copy=None):
        if not isinstance(self.array, np.ndarray):
            raise TypeError(_host_only(self, "numpy"))
        if dtype is not None and np.dtype(dtype) != self.array.dtype:
            return self.array.astype(dtype)
        return self.array.copy() if copy else self.array

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.array.dtype.kind not in "iub":
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self.array.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.array.size} values is "
                               "ambiguous")
        return bool(self.item())

    def __len__(self):
        if self.array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __iter__(self):
        if self.array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.array.shape[0]))

    __hash__ = object.__hash__

    def detach(self) -> "Tensor":
        """A Tensor on the same array, cut from the graph (in-place changes show in both).

        Example:
            >>> Tensor([1.0], requires_grad=True).detach().requires_grad
            False
        """
        t = Tensor._wrap(self.array)
        t._version = self._version
        return t

    def detach_(self) -> "Tensor":
        """Cut this tensor from the graph in place; returns self.

        Example:
            >>> Tensor([1.0]).detach_().is_leaf
            True
        """
        self._node = None
        self.requires_grad = False
        return self

    def cpu(self) -> "Tensor":
        """This tensor on the cpu: itself when it is there already, else a copy (autograd
        carries gradients back to the cuda original).

        Example:
            >>> t = Tensor([1.0]); t.cpu() is t
            True
        """
        return self.to(CPU)

    def cuda(self, device=None) -> "Tensor":
        """This tensor on a CUDA device ("cuda" = the current one; an int N = "cuda:N").

        Example:
            >>> import modelkit.authoring as mk
            >>> mk.ones(1).cuda() if mk.cuda.is_available() else "no gpu"  # doctest: +SKIP
        """
        return self.to("cuda" if device is None else device)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Start (or stop) recording operations on this leaf tensor; returns self.

        Example:
            >>> Tensor([1.0]).requires_grad_()
            tensor([1.], requires_grad=True)
        """
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If "
                               "you want to use a computed variable in a subgraph that doesn't "
                               "require differentiation use var_no_grad = var.detach().")
        if requires_grad and self.array.dtype.kind not in "fc":
            raise RuntimeError("only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        self.requires_grad = bool(requires_grad)
        return self

    # ---- autograd -------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (see autograd.backward).

        Example:
            >>> x = Tensor([3.0], requires_grad=True)
            >>> (x * x).backward(); x.grad
            tensor([6.])
        """
        from modelkit.authoring.autograd.engine import backward
        backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph,
                 inputs=inputs)

    def register_hook(self, hook):
        """Call `hook(grad) -> Tensor or None` with this tensor's gradient during backward;
        a returned Tensor replaces the gradient. Returns a handle with `.remove()`.

        Example:
            >>> x = Tensor([1.0], requires_grad=True)
            >>> handle = x.register_hook(lambda g: g * 10)
            >>> (x * 2).backward(); x.grad
            tensor([20.])
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._node is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            if self._node.hooks is None:
                self._node.hooks = {}
            hooks = self._node.hooks.setdefault(self._index, [])
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def retain_grad(self) -> None:
        """Keep `.grad` of this non-leaf tensor after backward (leaves always keep it).

        Example:
            >>> x = Tensor([1.0], requires_grad=True)
            >>> y = x * 2; y.retain_grad(); (y * y).backward(); y.grad
            tensor([4.])
        """
        if self._node is None or self._retains_grad:
            return
        self._retains_grad = True
        import weakref
        ref = weakref.ref(self)

        def keep(grad):
            t = ref()
            if t is not None:
                t.grad = grad if t.grad is None else t.grad + grad
        self.register_hook(keep)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    @property
    def _version_count(self) -> int:
        return self._version[0]

    def __repr__(self):
        return format_tensor(self)

    def __format__(self, spec):
        if self.array.ndim == 0 and spec:
            return format(self.item(), spec)
        return repr(self)


class _HookHandle:
    __slots__ = ("_hooks", "_hook")

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _host_only(t: Tensor, what: str) -> str:
    """PyTorch's message for converting a cuda tensor where host memory is needed."""
    return (f"can't convert {t.device} device type tensor to {what}. Use Tensor.cpu() to copy "
            "the tensor to host memory first.")


def _check_dim(dim: int, ndim: int) -> int:
    """Normalise a possibly negative dim; IndexError with PyTorch's message when out of range."""
    low, high = (-ndim, ndim - 1) if ndim else (-1, 0)
    if not low <= dim <= high:
        raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], "
                         f"but got {dim})")
    return dim + ndim if dim < 0 else (dim if ndim else 0)


# ---- repr ---------------------------------------------------------------------------------
_DEFAULT_DTYPES = (np.dtype("float32"), np.dtype("int64"), np.dtype("bool"))


def _float_formatter(array: np.ndarray):
    finite = array[np.isfinite(array)].astype(np.float64)
    if finite.size == 0:
        return lambda v: f"{v:.4f}"
    magnitudes = np.abs(finite)
    if np.all(finite == np.round(finite)) and magnitudes.max() < 1e8:
        return lambda v: f"{v:.0f}." if np.isfinite(v) else f"{v}"
    nonzero = magnitudes[magnitudes > 0]
    if nonzero.size and (nonzero.max() >= 1e8 or nonzero.min() < 1e-4
                         or nonzero.max() / nonzero.min() > 1000):
        return lambda v: f"{v:.4e}"
    return lambda v: f"{v:.4f}"


def format_tensor(t: Tensor) -> str:
    """PyTorch-style repr: `tensor([[1.0000, 2.5000]], requires_grad=True)`."""
    array = t.array if isinstance(t.array, np.ndarray) else t.array.get()
    if array.dtype.kind == "f":
        fmt = _float_formatter(array)
        width = max((len(fmt(v)) for v in array.ravel()[:2000]), default=0)
        formatter = {"float_kind": lambda v: fmt(v).rjust(width)}
    else:
        formatter = None
    body = np.array2string(array, separator=", ", prefix="tensor(", formatter=formatter,
                           threshold=1000, edgeitems=3, max_line_width=80)
    extras = [] if isinstance(t.array, np.ndarray) else [f"device='{t.device}'"]
    if array.size == 0 and array.ndim != 1:
        extras.append(f"size={tuple(array.shape)}")
    if array.dtype not in _DEFAULT_DTYPES:
        extras.append(f"dtype={dtypes.from_numpy(array.dtype)!r}")
    if t._node is not None:
        extras.append(f"grad_fn=<{t._node.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"


registry.bind_tensor_class(Tensor)
