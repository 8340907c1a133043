"""CUDA through cupy: the one place that imports cupy, lazily, the first time a CUDA device is
used. Both the edge runtime and modelkit.authoring ask here, so a missing cupy or a machine
without a GPU gives the same error everywhere.

Example:
    >>> parse_device("cuda:1"), parse_device("cpu")
    (('cuda', 1), ('cpu', None))
    >>> isinstance(device_count(), int)
    True
"""

from __future__ import annotations

from modelkit.edge_runtime.errors import CudaUnavailableError

INSTALL_HINT = ("pip install 'modelkit[gpu]' (installs cupy-cuda12x; on a CUDA 13 driver install "
                "cupy-cuda13x instead; see the README's GPU section)")


def import_cupy():
    """Import and return cupy (tests replace this to simulate a missing cupy or GPU)."""
    import cupy

    return cupy


_cupy = None


def cupy_module(spec: str = "cuda"):
    """cupy, once it is known to be installed and to see at least one GPU; else
    `CudaUnavailableError` saying which of the two is missing. `spec` names the device the
    caller asked for, for the message.

    Example:
        >>> try:
        ...     cupy_module()
        ... except CudaUnavailableError as e:
        ...     print(str(e).split(":")[0])
        device 'cuda'
    """
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        module = import_cupy()
    except ImportError as error:
        raise CudaUnavailableError(f"device {spec!r}: cupy is not installed ({error}); "
                                   f"{INSTALL_HINT}") from None
    count, reason = _count_devices(module)
    if count == 0:
        raise CudaUnavailableError(
            f"device {spec!r}: cupy is installed but found no CUDA device ({reason}); check "
            "`nvidia-smi` and that the cupy wheel matches the driver's CUDA major version "
            "(cupy-cuda12x for CUDA 12, cupy-cuda13x for CUDA 13)")
    _cupy = module
    return module


def _count_devices(module) -> tuple[int, str]:
    try:
        count = int(module.cuda.runtime.getDeviceCount())
    except Exception as error:  # noqa: BLE001  (cupy raises CUDARuntimeError without a driver)
        return 0, f"{type(error).__name__}: {error}"
    return count, "getDeviceCount() returned 0"


def device_count() -> int:
    """Number of CUDA devices cupy can use; 0 without cupy or a GPU (never raises).

    Example:
        >>> device_count() >= 0
        True
    """
    try:
        module = import_cupy() if _cupy is None else _cupy
    except ImportError:
        return 0
    return _count_devices(module)[0]


def parse_device(spec) -> tuple[str, int | None]:
    """('cpu', None), ('cuda', None) or ('cuda', N) for "cpu", "cuda", "cuda:N"; ValueError for
    anything else. Parsing alone never imports cupy.

    Example:
        >>> parse_device("cuda")
        ('cuda', None)
    """
    text = str(spec)
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index:
        return "cpu", None
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index) if index else None
    raise ValueError(f"unknown device {text!r}; expected 'cpu', 'cuda' or 'cuda:N'")


def cuda_device(spec, index: int | None):
    """cupy's `Device` for CUDA device `index` (None: the current one) after checking that it
    exists; `CudaUnavailableError` otherwise.

    Example:
        >>> try:
        ...     cuda_device("cuda:0", 0)
        ... except CudaUnavailableError:
        ...     pass
    """
    cupy = cupy_module(str(spec))
    if index is None:
        return cupy.cuda.Device()
    count = _count_devices(cupy)[0]
    if index >= count:
        raise CudaUnavailableError(f"device {str(spec)!r}: CUDA device index {index} is out of "
                                   f"range; this machine has {count} CUDA device(s) "
                                   f"(cuda:0..cuda:{count - 1})")
    return cupy.cuda.Device(index)
