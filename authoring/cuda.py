"""`mk.cuda`: is_available, device_count, current_device, set_device, synchronize and the CUDA
random generators, as in `torch.cuda`. Nothing here imports cupy until a GPU is really used.

Example:
    >>> import modelkit.authoring as mk
    >>> mk.cuda.is_available() == (mk.cuda.device_count() > 0)
    True
"""

from __future__ import annotations

from modelkit.edge_runtime import cuda as _cuda
from modelkit.edge_runtime.cuda import CudaUnavailableError

__all__ = ["CudaUnavailableError", "current_device", "device_count", "is_available",
           "manual_seed", "manual_seed_all", "random_state", "set_device", "synchronize"]


def is_available() -> bool:
    """True when cupy is installed and sees at least one CUDA device (never raises).

    Example:
        >>> isinstance(is_available(), bool)
        True
    """
    return _cuda.device_count() > 0


def device_count() -> int:
    """Number of usable CUDA devices (0 without cupy or a GPU).

    Example:
        >>> device_count() >= 0
        True
    """
    return _cuda.device_count()


def current_device() -> int:
    """Index of the current CUDA device; `CudaUnavailableError` without one.

    Example:
        >>> current_device() if is_available() else 0
        0
    """
    return int(_cuda.cupy_module().cuda.runtime.getDevice())


def set_device(device) -> None:
    """Make `device` ("cuda:N", N or an mk.device) the current CUDA device.

    Example:
        >>> set_device(0) if is_available() else None
    """
    from modelkit.authoring.device import check
    _cuda.cupy_module().cuda.Device(check(device if not isinstance(device, int)
                                          else f"cuda:{device}").index).use()


def synchronize(device=None) -> None:
    """Wait until every kernel queued on the device has finished (for timing; results never
    need it: reading a value back to the host waits anyway).

    Example:
        >>> synchronize() if is_available() else None
    """
    cupy = _cuda.cupy_module()
    if device is None:
        cupy.cuda.Device().synchronize()
        return
    from modelkit.authoring.device import check
    cupy.cuda.Device(check(device).index).synchronize()


_seed: int | None = None
_states: dict = {}


def manual_seed(seed: int) -> None:
    """Seed the random generators of every CUDA device (rand/randn/randint/randperm/dropout/
    init on cuda); `mk.manual_seed` does this too. Never imports cupy.

    Example:
        >>> manual_seed(0)
    """
    global _seed
    _seed = int(seed)
    _states.clear()


manual_seed_all = manual_seed


def random_state(index: int):
    """cupy's RandomState for CUDA device `index`, created on first use from the last
    `manual_seed` (or the global generator's seed).

    Example:
        >>> random_state(0).randn(2).shape if is_available() else (2,)
        (2,)
    """
    state = _states.get(index)
    if state is None:
        from modelkit.authoring.random import initial_seed
        cupy = _cuda.cupy_module(f"cuda:{index}")
        with cupy.cuda.Device(index):
            state = _states[index] = cupy.random.RandomState(
                _seed if _seed is not None else initial_seed())
    return state
