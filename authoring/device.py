"""Devices: "cpu" (numpy arrays) and "cuda" / "cuda:N" (cupy arrays, cupy imported only when a
CUDA device is first used), and the per-op check that all operands share one device.

Example:
    >>> device("cpu"), device("cuda:1")
    (device(type='cpu'), device(type='cuda', index=1))
"""

from __future__ import annotations

import contextlib

import numpy as np

from modelkit.edge_runtime import cuda as _cuda

_HOST = (np.ndarray, np.generic)


class _Dispatch:
    """`cuda_in_use` is set once a CUDA device has been checked: until then every op runs on
    numpy without looking at its operands' devices (the cpu path pays one attribute read)."""

    __slots__ = ("cuda_in_use",)

    def __init__(self):
        self.cuda_in_use = False


dispatch = _Dispatch()


class device:  # noqa: N801  (lower-case like torch.device)
    """Where a tensor's array lives: `device("cpu")`, `device("cuda")`, `device("cuda:1")`,
    `device("cuda", 1)`. Compares equal to its string: `device("cpu") == "cpu"`. Making one
    only parses; using a cuda device checks that cupy and the GPU are there."""

    __slots__ = ("type", "index")

    def __init__(self, type="cpu", index=None):  # noqa: A002  (torch's parameter name)
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        elif isinstance(type, int) and not isinstance(type, bool):
            type, index = "cuda", type  # torch.device(0) is cuda:0
        try:
            kind, parsed = _cuda.parse_device(type)
        except ValueError as error:
            raise RuntimeError(str(error)) from None
        if index is not None and kind != "cuda":
            raise RuntimeError(f"device {type!r} takes no index (got {index})")
        self.type = kind
        self.index = parsed if index is None else int(index)

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except RuntimeError:
                return False
        return (isinstance(other, device) and other.type == self.type
                and (other.index == self.index or None in (other.index, self.index)))

    def __hash__(self):
        return hash(self.type)


CPU = device("cpu")


def check(spec) -> device:
    """Validate a user's device argument (None means cpu). A cuda device must exist: without
    cupy or a GPU this raises `CudaUnavailableError` saying which; "cuda" resolves to the
    current CUDA device's index.

    Example:
        >>> check(None), check("cpu")
        (device(type='cpu'), device(type='cpu'))
    """
    if spec is None or spec is CPU:
        return CPU
    target = device(spec)
    if target.type == "cpu":
        return CPU
    found = _cuda.cuda_device(str(target), target.index)
    dispatch.cuda_in_use = True
    return device("cuda", int(found.id))


def array_module(array):
    """The array module (`xp`) that holds `array`: numpy for cpu arrays, cupy for cuda ones.

    Example:
        >>> array_module(np.zeros(2)) is np
        True
    """
    if isinstance(array, _HOST):
        return np
    return _cuda.cupy_module()


def array_device(array) -> device:
    """The device of a numpy (cpu) or cupy (cuda:N) array.

    Example:
        >>> array_device(np.zeros(2))
        device(type='cpu')
    """
    if isinstance(array, _HOST):
        return CPU
    return device("cuda", int(array.device.id))


def move_array(array, target: device):
    """`array` on device `target` (itself when it is already there; else a copy).

    Example:
        >>> a = np.zeros(2); move_array(a, CPU) is a
        True
    """
    if target.type == "cpu":
        return array if isinstance(array, _HOST) else array.get()
    cupy = _cuda.cupy_module(str(target))
    if isinstance(array, _HOST):
        with cupy.cuda.Device(target.index):
            return cupy.asarray(array)
    if array.device.id == target.index:
        return array
    with cupy.cuda.Device(target.index):
        return array.copy()  # NOTE: cupy.asarray would keep it on its own device


def mismatch_error(op_name: str, first: device, second: device) -> RuntimeError:
    """PyTorch's error for operands on two devices.

    Example:
        >>> str(mismatch_error("add", device("cuda:0"), CPU)).split("!")[0]
        'Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu'
    """
    return RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                        f"devices, {first} and {second}! (in op '{op_name}')")


def op_module(op_name: str, arrays: tuple):
    """(xp, arrays) for one op call: numpy when every operand is on the cpu, else cupy with the
    operands' CUDA device made current. Raises `mismatch_error` for operands on two devices;
    as in PyTorch, a 0-d cpu array (a Python scalar made a tensor) joins a cuda op.

    Example:
        >>> op_module("add", (np.ones(2), None))[0] is np
        True
    """
    on_gpu = on_cpu = None
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, _HOST):
            if a.ndim and on_cpu is None:
                on_cpu = a
        elif on_gpu is None:
            on_gpu = a
        elif a.device.id != on_gpu.device.id:
            raise mismatch_error(op_name, array_device(on_gpu), array_device(a))
    if on_gpu is None:
        return np, arrays
    if on_cpu is not None:
        first = next(a for a in arrays if a is on_cpu or a is on_gpu)
        pair = (CPU, array_device(on_gpu)) if first is on_cpu else (array_device(on_gpu), CPU)
        raise mismatch_error(op_name, *pair)
    cupy = _cuda.cupy_module()
    if cupy.cuda.runtime.getDevice() != on_gpu.device.id:
        on_gpu.device.use()
    return cupy, tuple([cupy.asarray(a) if isinstance(a, _HOST) else a for a in arrays])


def module_on(target: device):
    """(xp, context manager) for making new arrays on `target`: numpy and a no-op context on
    the cpu, cupy and the device's context on cuda.

    Example:
        >>> xp, where = module_on(CPU)
        >>> with where:
        ...     xp.zeros(2).shape
        (2,)
    """
    if target.type == "cpu":
        return np, contextlib.nullcontext()
    cupy = _cuda.cupy_module(str(target))
    return cupy, cupy.cuda.Device(target.index)
