"""How much memory a model needs: weight bytes, and peak activation bytes measured on a run.

The peak is measured, not estimated: `measure_memory` runs the plan once on zero-filled inputs
of the requested dims and, after every node, sums the bytes of the distinct buffers that are
alive (graph inputs, intermediates not yet released, outputs so far). Views share their base's
buffer and are counted once; views on weights are weights, not activations.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> from modelkit.edge_runtime.plan import build_plan
    >>> m = Model(inputs=[ValueInfo("x", "float32", ("n", 4))], outputs=[ValueInfo("y", "float32", ("n", 4))],
    ...           nodes=[Node("Neg", ["x"], ["t"]), Node("Relu", ["t"], ["y"])])
    >>> r = measure_memory(build_plan(m, np), m, {"n": 10})
    >>> r.peak_activation_bytes  # x and t after Neg, t and y after Relu: 2 x 10 x 4 float32
    320
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelkit.edge_runtime.errors import InvalidInputError
from modelkit.edge_runtime.format.model import Model
from modelkit.edge_runtime.plan import Plan, kernel_error


@dataclass(frozen=True)
class MemoryReport:
    """Weights (initializers and Constant nodes) by dtype, and the activation peak for `dims`.

    `peak_node` is the node after which the peak was reached (empty for a graph without nodes).
    """

    weight_bytes: int
    weight_bytes_by_dtype: dict[str, int]
    peak_activation_bytes: int
    peak_node: str
    dims: dict[str, int]


def measure_memory(plan: Plan, model: Model, dims: dict[str, int] | None = None) -> MemoryReport:
    """Run `plan` once on zero inputs shaped with `dims` (named dims missing from it are 1)
    and report weights and the activation peak. Raises `KernelError` if the model cannot run on
    zeros, `InvalidInputError` for an input without a declared shape.

    Example: see the module docstring.
    """
    dims = dict(dims or {})
    slots = list(plan.initial_slots)
    for info in model.inputs:
        if info.name in model.initializers:
            continue
        if info.shape is None:
            raise InvalidInputError(f"input '{info.name}' declares no shape; the memory report"
                                    f" needs one to build a zero input")
        shape = tuple(d if isinstance(d, int) else dims.setdefault(d, 1) for d in info.shape)
        slots[plan.slot_of[info.name]] = np.zeros(shape, _zero_dtype(info.dtype))

    weights = [slots[s] for s in plan.constant_slots]
    by_dtype: dict[str, int] = {}
    for w in weights:
        by_dtype[str(w.dtype)] = by_dtype.get(str(w.dtype), 0) + w.nbytes
    weight_buffers = {id(_buffer(w)) for w in weights}

    peak, peak_node = _live_bytes(slots, weight_buffers), ""
    step = None
    try:
        for step in plan.steps:
            fn, ins, outs, _, dead, i = step
            results = fn(*[slots[s] for s in ins])
            for s, r in zip(outs, results):
                slots[s] = r
            live = _live_bytes(slots, weight_buffers)
            if live > peak:
                peak, peak_node = live, plan.labels[i]
            for s in dead:
                slots[s] = None
    except Exception as e:
        raise kernel_error(plan, step, slots, e) from e
    return MemoryReport(sum(by_dtype.values()), by_dtype, peak, peak_node, dims)


def _live_bytes(slots: list, weight_buffers: set[int]) -> int:
    buffers = {}
    for value in slots:
        if isinstance(value, np.ndarray):
            base = _buffer(value)
            if id(base) not in weight_buffers:
                buffers[id(base)] = base.nbytes
    return sum(buffers.values())


def _buffer(array):
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _zero_dtype(name: str):
    return object if name == "string" else np.dtype(name)
