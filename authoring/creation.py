"""Tensor creation: tensor, zeros, ones, full, empty, arange, linspace, eye, rand, randn,
randint, randperm and the *_like forms, with PyTorch's dtype defaults.

Example:
    >>> import modelkit.authoring as mk
    >>> mk.tensor([1, 2]).dtype, mk.tensor([1.0]).dtype, mk.zeros(2, 3).shape
    (modelkit.int64, modelkit.float32, modelkit.Size([2, 3]))
"""

from __future__ import annotations

import numbers

import numpy as np

from modelkit.authoring.device import check as check_device, module_on, move_array
from modelkit.authoring import dtypes
from modelkit.authoring.random import numpy_generator
from modelkit.authoring.tensor import Tensor


def _finish(array, dtype, device, requires_grad) -> Tensor:
    """Cast, check the dtype, move to `device` (None: leave the array where it is), wrap."""
    if device is not None:
        array = move_array(array, check_device(device))
    if dtype is not None:
        target = dtypes.from_any(dtype).numpy
        if array.dtype != target:
            array = array.astype(target)
    else:
        dtypes.from_numpy(array.dtype)  # refuses dtypes a Tensor cannot hold
    t = Tensor._wrap(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _size(size) -> tuple:
    if len(size) == 1 and not isinstance(size[0], numbers.Integral):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"sizes must be non-negative integers, got {tuple(size)}")
    return tuple(int(s) for s in size)


def _default_dtype_of(array: np.ndarray) -> np.ndarray:
    """Python data -> PyTorch defaults: floats are float32, ints int64."""
    if array.dtype.kind == "f" and array.dtype != np.float32:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype != np.int64:
        return array.astype(np.int64)
    return array


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of `data` (nested lists, numbers, numpy arrays, Tensors).

    Python floats give float32 and ints int64; a numpy array keeps its dtype.

    Example:
        >>> tensor([[1.0, 2.0]], requires_grad=True)
        tensor([[1., 2.]], requires_grad=True)
    """
    if isinstance(data, Tensor):
        array = data.array.copy()
    elif isinstance(data, np.ndarray):
        array = data.copy()
    else:
        array = _default_dtype_of(np.array(data))
    return _finish(array, dtype, device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like `tensor`, but shares memory with a Tensor or numpy array when no conversion is needed.

    Example:
        >>> import numpy as np
        >>> a = np.zeros(2, np.float32); as_tensor(a).array is a
        True
    """
    if isinstance(data, Tensor) and (dtype is None or dtypes.from_any(dtype) == data.dtype):
        return data
    if isinstance(data, np.ndarray):
        return _finish(data, dtype, device, False)
    return tensor(data, dtype, device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing `array`'s memory (changes show in both).

    Example:
        >>> import numpy as np
        >>> from_numpy(np.arange(3)).dtype
        modelkit.int64
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    return _finish(array, None, None, False)


def _filled(fill, size, dtype, device, requires_grad):
    target = dtypes.from_any(dtype).numpy if dtype is not None else dtypes.DEFAULT_FLOAT.numpy
    xp, where = module_on(check_device(device))
    with where:
        return _finish(xp.full(_size(size), fill, dtype=target), None, None, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros (float32 unless `dtype`).

    Example:
        >>> zeros(2)
        tensor([0., 0.])
    """
    return _filled(0, size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones (float32 unless `dtype`).

    Example:
        >>> ones(2, dtype=dtypes.int64)
        tensor([1, 1])
    """
    return _filled(1, size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor whose values are unspecified (zeros here: no uninitialised NaN surprises).

    Example:
        >>> empty(2, 3).shape
        modelkit.Size([2, 3])
    """
    return _filled(0, size, dtype, device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor filled with `fill_value`; dtype follows the value (bool, int64 or float32).

    Example:
        >>> full((2,), 7)
        tensor([7, 7])
    """
    if dtype is None:
        dtype = _default_dtype_of(np.array(fill_value)).dtype
    return _filled(fill_value, (tuple(size),), dtype, device, requires_grad)


def _like(input, dtype, device):
    """shape, dtype and device of a *_like result: input's unless given (as in torch)."""
    return (input.array.shape, dtype if dtype is not None else input.dtype,
            device if device is not None else input.device)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:  # noqa: A002
    """zeros with input's shape and dtype.

    Example:
        >>> zeros_like(ones(2, dtype=dtypes.int64))
        tensor([0, 0])
    """
    shape, dtype, device = _like(input, dtype, device)
    return zeros(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:  # noqa: A002
    """ones with input's shape and dtype.

    Example:
        >>> ones_like(zeros(2))
        tensor([1., 1.])
    """
    shape, dtype, device = _like(input, dtype, device)
    return ones(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:  # noqa: A002
    """empty with input's shape and dtype.

    Example:
        >>> empty_like(zeros(2, 2)).shape
        modelkit.Size([2, 2])
    """
    shape, dtype, device = _like(input, dtype, device)
    return empty(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None,  # noqa: A002
              requires_grad=False) -> Tensor:
    """full with input's shape and dtype.

    Example:
        >>> full_like(zeros(2), 3)
        tensor([3., 3.])
    """
    shape, dtype, device = _like(input, dtype, device)
    return full(shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def rand_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:  # noqa: A002
    """rand with input's shape and dtype.

    Example:
        >>> rand_like(zeros(3)).shape
        modelkit.Size([3])
    """
    shape, dtype, device = _like(input, dtype, device)
    return rand(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:  # noqa: A002
    """randn with input's shape and dtype.

    Example:
        >>> randn_like(zeros(3)).shape
        modelkit.Size([3])
    """
    shape, dtype, device = _like(input, dtype, device)
    return randn(shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randint_like(input, low=0, high=None, *, dtype=None, device=None) -> Tensor:  # noqa: A002
    """randint with input's shape and dtype; randint_like(x, high) or (x, low, high).

    Example:
        >>> randint_like(zeros(3, dtype=dtypes.int64), 5).shape
        modelkit.Size([3])
    """
    shape, dtype, device = _like(input, dtype, device)
    if high is None:
        low, high = 0, low
    return randint(low, high, shape, dtype=dtype, device=device)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Values from start (default 0) up to, not including, end; int64 if all arguments are
    integers, else float32.

    Example:
        >>> arange(3), arange(0, 1, 0.5)
        (tensor([0, 1, 2]), tensor([0.0000, 0.5000]))
    """
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        integral = all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = dtypes.int64 if integral else dtypes.DEFAULT_FLOAT
    # computed in float64 so float32 results match PyTorch's (no accumulated rounding)
    array = np.arange(start, end, step, dtype=np.float64 if dtypes.from_any(dtype)
                      .is_floating_point else np.int64)
    return _finish(array, dtype, device, requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """`steps` evenly spaced values from start to end inclusive (float32 by default).

    Example:
        >>> linspace(0, 1, 3)
        tensor([0.0000, 0.5000, 1.0000])
    """
    array = np.linspace(start, end, int(steps), dtype=np.float64)
    return _finish(array, dtype or dtypes.DEFAULT_FLOAT, device, requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """The n x m identity matrix (float32 by default).

    Example:
        >>> eye(2)
        tensor([[1., 0.],
                [0., 1.]])
    """
    array = np.eye(n, n if m is None else m, dtype=(dtypes.from_any(dtype) if dtype else
                                                     dtypes.DEFAULT_FLOAT).numpy)
    return _finish(array, None, device, requires_grad)


def _float_dtype(dtype, name):
    dtype = dtypes.from_any(dtype) if dtype is not None else dtypes.DEFAULT_FLOAT
    if not dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating point dtype, got {dtype}")
    return dtype.numpy


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) from the global generator (see manual_seed).

    Example:
        >>> rand(2, 3).shape
        modelkit.Size([2, 3])
    """
    return _random_floats("rand", size, generator, dtype, device, requires_grad)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the global generator (see manual_seed).

    Example:
        >>> randn(4).dtype
        modelkit.float32
    """
    return _random_floats("randn", size, generator, dtype, device, requires_grad)


# per creation function: the sampler of cupy's RandomState, then of numpy's Generator
_FLOAT_SAMPLERS = {"rand": ("random_sample", "random"),
                   "randn": ("standard_normal", "standard_normal")}


def _random_floats(name, size, generator, dtype, device, requires_grad) -> Tensor:
    target = _float_dtype(dtype, name)
    draw_dtype = target if target != np.float16 else np.float32  # generators draw float32/64
    cuda = _cuda_state(device, generator)
    cuda_sampler, numpy_sampler = _FLOAT_SAMPLERS[name]
    sample = (getattr(cuda, cuda_sampler) if cuda is not None
              else getattr(numpy_generator(generator), numpy_sampler))
    return _finish(sample(_size(size), dtype=draw_dtype), target, device, requires_grad)


def randint(low=0, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False) -> Tensor:
    """Integers in [low, high) (int64 by default); randint(high, size) or randint(low, high, size).

    Example:
        >>> randint(0, 10, (3,)).dtype
        modelkit.int64
    """
    if size is None:
        if high is None:
            raise TypeError("randint() missing required argument 'size'")
        low, high, size = 0, low, high
    if high <= low:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    cuda = _cuda_state(device, generator)
    if cuda is not None:
        draw = cuda.randint(low, high, size=_size((size,))).astype(np.int64)
    else:
        draw = numpy_generator(generator).integers(low, high, size=_size((size,)),
                                                   dtype=np.int64)
    return _finish(draw, dtype, device, requires_grad)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A random permutation of 0..n-1 (int64).

    Example:
        >>> sorted(randperm(4).tolist())
        [0, 1, 2, 3]
    """
    cuda = _cuda_state(device, generator)
    if cuda is not None:
        return _finish(cuda.permutation(int(n)).astype(np.int64), dtype, device, requires_grad)
    return _finish(numpy_generator(generator).permutation(int(n)), dtype, device, requires_grad)


def _cuda_state(device, generator):
    """The CUDA device's cupy RandomState when drawing on cuda from the global generators
    (seeded by mk.manual_seed / mk.cuda.manual_seed); None to draw with numpy (on the cpu, or
    from an explicit `generator`, whose draws are then copied to the device)."""
    if device is None or generator is not None:
        return None
    target = check_device(device)
    if target.type == "cpu":
        return None
    from modelkit.authoring import cuda
    return cuda.random_state(target.index)
