"""Per-node wall-time profiling of `Session.run`, exportable as Chrome-trace JSON.

A session loaded with `profile=True` runs its plan through `Profiler.run_steps`, which times
each kernel call with `time.perf_counter_ns` and keeps one `NodeTiming` per step per run (a
fused step is timed once, as its last node, op type "MatMul+Add" and the like).
Records accumulate across runs (and threads) until `clear()`; `chrome_trace()` gives the
"traceEvents" document that Perfetto (ui.perfetto.dev) and chrome://tracing open.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> from modelkit.edge_runtime.plan import build_plan
    >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))], outputs=[ValueInfo("y", "float32", (2,))],
    ...           nodes=[Node("Relu", ["x"], ["y"], name="relu")])
    >>> plan, profiler = build_plan(m, np), Profiler()
    >>> slots = list(plan.initial_slots)
    >>> slots[plan.slot_of["x"]] = np.ones(2, np.float32)
    >>> profiler.run_steps(plan, slots)
    >>> [(t.node, t.op_type, t.input_shapes, t.output_shapes) for t in profiler.records()]
    [('relu', 'Relu', ((2,),), ((2,),))]
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import NamedTuple

from modelkit.edge_runtime.plan import Plan, kernel_error


class NodeTiming(NamedTuple):
    """One node's execution in one run. Times in nanoseconds; `start_ns` counts from the
    profiler's creation. Shapes are those of the node's inputs and outputs (None if omitted)."""

    run: int
    node: str
    op_type: str
    start_ns: int
    duration_ns: int
    input_shapes: tuple
    output_shapes: tuple
    thread: int


class Profiler:
    """Collects `NodeTiming`s; safe to share between threads running the same session."""

    def __init__(self):
        self._origin_ns = time.perf_counter_ns()
        self._lock = threading.Lock()
        self._records: list[NodeTiming] = []
        self._runs = 0

    def run_steps(self, plan: Plan, slots: list) -> None:
        """`plan.run_steps` with every kernel call timed (same semantics and errors)."""
        with self._lock:
            run = self._runs
            self._runs += 1
        thread = threading.get_ident()
        clock = time.perf_counter_ns
        timings = []
        step = None
        try:
            for step in plan.steps:
                fn, ins, outs, n_out, dead, i = step
                args = [slots[s] for s in ins]
                start = clock()
                results = fn(*args)
                duration = clock() - start
                if type(results) is not tuple or len(results) < n_out:
                    raise TypeError(f"the kernel returned {type(results).__name__}, expected a"
                                    f" tuple of {n_out} array(s)")
                node = plan.nodes[i]
                fusion = plan.fusions.get(i)
                timings.append(NodeTiming(run, node.name or plan.labels[i],
                                          fusion.op_types if fusion else node.op_type,
                                          start - self._origin_ns, duration, _shapes(args),
                                          _shapes(results[:n_out]), thread))
                if n_out == 1:
                    slots[outs[0]] = results[0]
                else:
                    for s, r in zip(outs, results):
                        slots[s] = r
                for s in dead:
                    slots[s] = None
        except Exception as e:
            raise kernel_error(plan, step, slots, e) from e
        finally:
            with self._lock:
                self._records.extend(timings)

    def records(self) -> list[NodeTiming]:
        """Every timing recorded so far, in completion order per run."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget the recorded timings."""
        with self._lock:
            self._records.clear()

    def chrome_trace(self) -> dict:
        """The records as a Chrome-trace document: complete ("X") events, microseconds.

        Example:
            >>> Profiler().chrome_trace()["traceEvents"]
            []
        """
        events = [{
            "name": t.node, "cat": t.op_type, "ph": "X", "pid": os.getpid(), "tid": t.thread,
            "ts": t.start_ns / 1000, "dur": t.duration_ns / 1000,
            "args": {"op_type": t.op_type, "run": t.run, "input_shapes": t.input_shapes,
                     "output_shapes": t.output_shapes},
        } for t in self.records()]
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def save(self, path) -> None:
        """Write `chrome_trace()` as JSON to `path`."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.chrome_trace(), f)


def _shapes(values) -> tuple:
    return tuple(tuple(v.shape) if hasattr(v, "shape") else None for v in values)
