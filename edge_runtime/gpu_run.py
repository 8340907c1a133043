"""What a `Session` on device="cuda" does around the shared plan: feeds in (numpy copied to the
GPU, cupy used in place), the plan run with the session's device current, outputs back (numpy
by default, cupy arrays with `device_outputs=True`), optionally through a CUDA graph.

The kernels and the plan are the cpu ones with `xp` = cupy; weights were copied to the GPU once
when the plan was built (`build_plan` places them with `xp.asarray`).

Example:
    >>> from modelkit.edge_runtime.cuda import CudaUnavailableError
    >>> try:
    ...     GpuRun("cuda", None)
    ... except CudaUnavailableError as e:
    ...     "cupy" in str(e)
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from modelkit.edge_runtime.cuda import cuda_device, cupy_module
from modelkit.edge_runtime.input_check import InputCheck, check_feeds
from modelkit.edge_runtime.plan import Plan, run_steps


class GpuRun:
    """The CUDA side of one session: its cupy module and device."""

    def __init__(self, spec: str, index):
        self.cupy = cupy_module(spec)
        self.device = cuda_device(spec, index)

    def place_feeds(self, checks: list[InputCheck], feeds) -> list[tuple[int, object]]:
        """(slot, cupy array) per feed, after the same checks as on the cpu. A cupy feed is
        checked through a zero-size numpy stand-in of its shape and dtype (no copy) and used in
        place; anything else is checked as usual and copied to the GPU once."""
        if not isinstance(feeds, Mapping):
            return check_feeds(checks, feeds)  # raises the usual InvalidInputError
        on_gpu = {name: value for name, value in feeds.items() if isinstance(value, self.cupy.ndarray)}
        stand_ins = {**feeds, **{name: _stand_in(value) for name, value in on_gpu.items()}}
        name_of = {check.slot: check.name for check in checks}
        placed = []
        with self.device:
            for slot, array in check_feeds(checks, stand_ins):
                value = on_gpu.get(name_of[slot])
                if value is None or value.device.id != self.device.id:
                    value = self.cupy.asarray(array if value is None else value)
                placed.append((slot, value))
        return placed

    def run(self, plan: Plan, slots: list) -> None:
        """Run the plan with this session's device current (kernels launch asynchronously)."""
        with self.device:
            run_steps(plan, slots)

    def outputs(self, arrays: dict, device_outputs: bool) -> dict:
        """Outputs as numpy arrays (one copy each, which waits for the GPU), or as cupy arrays
        left on the device."""
        if device_outputs:
            with self.device:
                return {name: self.cupy.asarray(a) for name, a in arrays.items()}
        return {name: a.get() if isinstance(a, self.cupy.ndarray) else np.asarray(a)
                for name, a in arrays.items()}


def _stand_in(array) -> np.ndarray:
    """A numpy array with `array`'s shape and dtype that owns one element (for checking only)."""
    return np.broadcast_to(np.zeros((), dtype=array.dtype), array.shape)
