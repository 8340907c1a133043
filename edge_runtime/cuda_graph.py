"""CUDA graphs for `load(..., device="cuda", cuda_graph=True)`: the whole plan captured once with
cupy's stream capture and replayed per run, one launch instead of one per kernel.

How: the first run with a given set of input shapes runs the plan once on a private stream and
a private memory pool (compiling kernels, sizing buffers), then captures a second run of it
into a graph. Static input buffers receive each run's feeds; the graph writes static output
buffers, copied out per run. Nothing captured is freed (the plan runs with no slot cleared,
and the private pool serves only captures), so a replay never writes memory that something
else now owns. Inputs of other shapes run the plan uncaptured.

A plan whose kernels need host values (NonZero, shape-dependent ops that read a tensor) cannot
be captured: the capture fails, the session warns once and runs uncaptured from then on.

Example:
    >>> GraphRunner.__doc__.split(":")[0]
    'One captured plan for one session'
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

from modelkit.edge_runtime.plan import Plan, run_steps


class GraphRunner:
    """One captured plan for one session: `run(placed, wanted)` -> the wanted output arrays
    (fresh copies on the device), or None when this call must run uncaptured instead."""

    def __init__(self, plan: Plan, cupy, device):
        self.cupy = cupy
        self.device = device
        # NOTE: no slot is cleared while capturing: every buffer the graph touches stays alive
        self.plan = dataclasses.replace(plan, steps=tuple(
            step[:4] + ((),) + step[5:] for step in plan.steps))
        self.stream = None
        self.graph = None
        self.shapes = None
        self.failed = False
        self.lock = threading.Lock()  # one set of static buffers: replays take turns

    def run(self, placed: list[tuple[int, object]], wanted: list[int]):
        if self.failed:
            return None
        shapes = tuple((slot, array.shape, array.dtype) for slot, array in placed)
        with self.lock, self.device:
            if self.graph is None:
                self._capture(placed, shapes)
                if self.failed:
                    return None
            if shapes != self.shapes:
                return None
            return self._replay(placed, wanted)

    def _capture(self, placed, shapes) -> None:
        cupy = self.cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()  # serves captures only, kept as long as the graph
        self._wait_for_callers()
        with cupy.cuda.using_allocator(self.pool.malloc), self.stream:
            self.inputs = {slot: array.copy() for slot, array in placed}
            warm = list(self.plan.initial_slots)
            for slot, buffer in self.inputs.items():
                warm[slot] = buffer
            try:
                run_steps(self.plan, warm)  # compiles kernels; its buffers return to the pool
                del warm
                self.stream.synchronize()
                self.slots = list(self.plan.initial_slots)
                for slot, buffer in self.inputs.items():
                    self.slots[slot] = buffer
                self.stream.begin_capture()
                try:
                    run_steps(self.plan, self.slots)
                finally:
                    graph = self.stream.end_capture()
            except Exception as error:  # noqa: BLE001  (any failure means: run uncaptured)
                self.failed = True
                warnings.warn(f"cuda_graph=True: the plan could not be captured in a CUDA graph "
                              f"({type(error).__name__}: {error}); running it uncaptured",
                              RuntimeWarning, stacklevel=4)
                return
        self.graph, self.shapes = graph, shapes

    def _replay(self, placed, wanted):
        self._wait_for_callers()
        with self.stream:
            for slot, array in placed:
                self.cupy.copyto(self.inputs[slot], array)
            self.graph.launch(self.stream)
            outputs = [self.slots[s].copy() for s in wanted]
        # later work on the caller's stream sees the outputs
        self.cupy.cuda.get_current_stream().wait_event(self.stream.record())
        return outputs

    def _wait_for_callers(self) -> None:
        """Make the private stream wait for work the caller queued (e.g. a cupy feed)."""
        self.stream.wait_event(self.cupy.cuda.get_current_stream().record())
