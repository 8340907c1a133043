"""`Session`: a loaded model, ready to run; `load` and `load_onnx` make one from a file.

    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> m = Model(inputs=[ValueInfo("x", "float32", ("batch", 2))],
    ...           outputs=[ValueInfo("y", "float32", ("batch", 2))], nodes=[Node("Relu", ["x"], ["y"])])
    >>> sess = Session(m)
    >>> sess.inputs
    [TensorSpec(name='x', dtype='float32', shape=('batch', 2))]
    >>> sess.run({"x": np.array([[-1.0, 2.0]], np.float32)})
    {'y': array([[0., 2.]], dtype=float32)}
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional, Sequence

import numpy as np

from modelkit.edge_runtime import format as model_format
from modelkit.edge_runtime.cuda import parse_device
from modelkit.edge_runtime.dequantize import dequantize_weights
from modelkit.edge_runtime.errors import (EdgeRuntimeError, InvalidInputError, ModelFormatError,
                                          UnsupportedOpError)
from modelkit.edge_runtime.format.model import Model
from modelkit.edge_runtime.graph_check import structural_problems, unsupported_ops
from modelkit.edge_runtime.input_check import InputCheck, check_feeds
from modelkit.edge_runtime.memory_report import MemoryReport, measure_memory
from modelkit.edge_runtime.plan import build_plan, run_steps
from modelkit.edge_runtime.profiling import NodeTiming, Profiler


class TensorSpec(NamedTuple):
    """A graph input or output: numpy dtype name, shape with symbolic dims as their names
    (None when even the rank is unknown)."""

    name: str
    dtype: str
    shape: Optional[tuple]


def load(path_or_bytes, device: str = "cpu", *, profile: bool = False,
         cuda_graph: bool = False) -> "Session":
    """Load a `.mkb` model from a path or the file's bytes. The file is mapped, not read: the
    weights stay views on the mapping. Raises `ModelFormatError` for a malformed file and
    `UnsupportedOpError` listing every op without a kernel.

    `device="cuda"` / `"cuda:N"` runs the same plan with cupy (weights copied to the GPU once,
    here); `cuda_graph=True` then replays the whole plan as one CUDA graph (see `Session`).

    Example:
        >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
        >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
        ...           outputs=[ValueInfo("y", "float32", (2,))], nodes=[Node("Relu", ["x"], ["y"])])
        >>> load(model_format.write(m)).outputs
        [TensorSpec(name='y', dtype='float32', shape=(2,))]
    """
    return Session(model_format.read(path_or_bytes), device, profile=profile,
                   cuda_graph=cuda_graph)


def load_onnx(path_or_proto, device: str = "cpu", *, profile: bool = False,
              cuda_graph: bool = False) -> "Session":
    """Load an ONNX model (a path, its bytes or an `onnx.ModelProto`); needs the onnx package.

    Example:
        >>> from onnx import TensorProto, helper
        >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        >>> load_onnx(helper.make_model(g)).inputs
        [TensorSpec(name='x', dtype='float32', shape=(2,))]
    """
    from modelkit.edge_runtime.format.onnx_reader import read_onnx  # imports onnx

    return Session(read_onnx(path_or_proto), device, profile=profile, cuda_graph=cuda_graph)


class Session:
    """Executes one `Model`. `run` is re-entrant and thread-safe: a session holds no state that
    a run changes (only the profiler's records, behind a lock).

    `xp` is the array module the kernels get (numpy on "cpu", cupy on "cuda"/"cuda:N"). On
    cuda, without cupy or a GPU, loading raises `CudaUnavailableError` saying which.
    `cuda_graph=True` (cuda only) captures the plan in a CUDA graph on the first run and
    replays it for inputs of those shapes (other shapes, and plans that cannot be captured,
    run uncaptured; the latter with a RuntimeWarning). Replays of one session take turns.
    """

    def __init__(self, model: Model, device: str = "cpu", *, profile: bool = False,
                 cuda_graph: bool = False):
        self.model = model = dequantize_weights(model)  # int8/float16 weights -> float32, once
        self.device = device
        kind, index = parse_device(device)
        if cuda_graph and kind != "cuda":
            raise ValueError(f"cuda_graph=True needs device='cuda', got device={device!r}")
        self._gpu = None
        if kind == "cuda":
            from modelkit.edge_runtime.gpu_run import GpuRun  # cupy only for cuda sessions
            self._gpu = GpuRun(str(device), index)
        self.xp = np if self._gpu is None else self._gpu.cupy
        problems = structural_problems(model)
        missing = unsupported_ops(model)
        if problems:
            raise ModelFormatError("the model's graph is malformed:\n  " + "\n  ".join(
                problems + [message for message, _ in missing]))
        if missing:
            raise UnsupportedOpError(
                f"the model uses {len({op for _, op in missing})} op(s) without a kernel:\n  "
                + "\n  ".join(message for message, _ in missing),
                missing=sorted({op for _, op in missing}))
        with self._gpu.device if self._gpu is not None else contextlib.nullcontext():
            self._plan = build_plan(model, self.xp)  # on cuda: the weights' one copy to the GPU
        self._graph = None
        if cuda_graph:
            from modelkit.edge_runtime.cuda_graph import GraphRunner
            self._graph = GraphRunner(self._plan, self.xp, self._gpu.device)
        self._input_checks = [InputCheck.of(v, self._plan.slot_of[v.name],
                                            required=v.name not in model.initializers)
                              for v in model.inputs]
        self._output_slots = {v.name: self._plan.slot_of[v.name] for v in model.outputs}
        self._profiler = Profiler() if profile else None
        self.inputs = [TensorSpec(v.name, v.dtype, _spec_shape(v.shape)) for v in model.inputs
                       if v.name not in model.initializers]
        self.outputs = [TensorSpec(v.name, v.dtype, _spec_shape(v.shape)) for v in model.outputs]

    def run(self, feeds: dict, outputs: Optional[Sequence[str]] = None, *,
            device_outputs: bool = False) -> dict[str, np.ndarray]:
        """Run the model on `feeds` (input name -> array); return the requested outputs (all by
        default) by name. Raises `InvalidInputError` for feeds that do not match `inputs`,
        `KernelError` naming the node whose kernel failed.

        On cuda, feeds may be numpy arrays (copied to the GPU) or cupy arrays (used in place);
        outputs are numpy arrays, or with `device_outputs=True` cupy arrays left on the GPU
        (what onnxruntime's IOBinding `bind_output(name, "cuda")` gives). On the cpu,
        `device_outputs` changes nothing: the outputs are on the cpu already.

        Example: see the module docstring.
        """
        wanted = self._requested(outputs)
        if self._gpu is not None:
            return self._run_on_gpu(feeds, wanted, device_outputs)
        slots = list(self._plan.initial_slots)
        for slot, array in check_feeds(self._input_checks, feeds):
            slots[slot] = array
        if self._profiler is None:
            run_steps(self._plan, slots)
        else:
            self._profiler.run_steps(self._plan, slots)
        return {name: np.asarray(slots[slot]) for name, slot in wanted}

    def _run_on_gpu(self, feeds, wanted, device_outputs: bool) -> dict:
        placed = self._gpu.place_feeds(self._input_checks, feeds)
        arrays = None
        if self._graph is not None:
            arrays = self._graph.run(placed, [slot for _, slot in wanted])
        if arrays is None:
            slots = list(self._plan.initial_slots)
            for slot, array in placed:
                slots[slot] = array
            if self._profiler is None:
                self._gpu.run(self._plan, slots)
            else:
                with self._gpu.device:
                    self._profiler.run_steps(self._plan, slots)
            arrays = [slots[slot] for _, slot in wanted]
        return self._gpu.outputs({name: a for (name, _), a in zip(wanted, arrays)},
                                 device_outputs)

    def profile(self) -> list[NodeTiming]:
        """Per-node timings of every run so far (session loaded with `profile=True`).

        Example:
            >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
            >>> m = Model(inputs=[ValueInfo("x", "float32", (1,))],
            ...           outputs=[ValueInfo("y", "float32", (1,))], nodes=[Node("Relu", ["x"], ["y"])])
            >>> s = Session(m, profile=True)
            >>> _ = s.run({"x": np.ones(1, np.float32)})
            >>> [(t.op_type, t.duration_ns > 0) for t in s.profile()]
            [('Relu', True)]
        """
        return self._require_profiler().records()

    def save_profile(self, path) -> None:
        """Write the timings as Chrome-trace JSON (opens in ui.perfetto.dev, chrome://tracing).

        Example:
            >>> import json, os, tempfile
            >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
            >>> m = Model(inputs=[ValueInfo("x", "float32", (1,))],
            ...           outputs=[ValueInfo("y", "float32", (1,))], nodes=[Node("Relu", ["x"], ["y"])])
            >>> s = Session(m, profile=True)
            >>> _ = s.run({"x": np.ones(1, np.float32)})
            >>> path = os.path.join(tempfile.mkdtemp(), "trace.json")
            >>> s.save_profile(path)
            >>> [e["ph"] for e in json.load(open(path))["traceEvents"]]
            ['X']
        """
        self._require_profiler().save(path)

    def memory_report(self, dims: Optional[dict[str, int]] = None) -> MemoryReport:
        """Weight bytes and peak activation bytes for the named dims in `dims` (others are 1).

        NOTE: this runs the model once, on zero-filled inputs, and measures what is alive after
        each node; it takes as long as one `run`.

        Example:
            >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
            >>> m = Model(inputs=[ValueInfo("x", "float32", ("n",))],
            ...           outputs=[ValueInfo("y", "float32", ("n",))], nodes=[Node("Relu", ["x"], ["y"])])
            >>> Session(m).memory_report({"n": 256}).peak_activation_bytes
            2048
        """
        return measure_memory(self._plan, self.model, dims)

    def self_check(self) -> dict[str, float]:
        """Run the test vectors embedded in the model and return the max absolute error per
        output over all of them (inf where a shape differs, or strings/bools disagree).

        Example:
            >>> from modelkit.edge_runtime.format.model import Model, Node, TestVector, ValueInfo
            >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
            ...           outputs=[ValueInfo("y", "float32", (2,))], nodes=[Node("Relu", ["x"], ["y"])],
            ...           test_vectors=[TestVector({"x": np.array([-1, 2], np.float32)},
            ...                                    {"y": np.array([0, 2], np.float32)})])
            >>> Session(m).self_check()
            {'y': 0.0}
        """
        if not self.model.test_vectors:
            raise EdgeRuntimeError("the model holds no test vectors to check itself with; the"
                                   " writer embeds them when given Model.test_vectors")
        errors: dict[str, float] = {}
        for vector in self.model.test_vectors:
            got = self.run(vector.inputs, list(vector.outputs))
            for name, expected in vector.outputs.items():
                errors[name] = max(errors.get(name, 0.0), _max_abs_error(got[name], expected))
        return errors

    def __repr__(self) -> str:
        return (f"Session(device={self.device!r}, nodes={len(self.model.nodes)},"
                f" inputs={[tuple(s) for s in self.inputs]}, outputs={[tuple(s) for s in self.outputs]})")

    def _requested(self, outputs) -> list[tuple[str, int]]:
        if outputs is None:
            return list(self._output_slots.items())
        if isinstance(outputs, str):
            outputs = [outputs]
        unknown = [o for o in outputs if o not in self._output_slots]
        if unknown:
            raise InvalidInputError(f"unknown output(s) {unknown}; the model's outputs are"
                                    f" {list(self._output_slots)}")
        return [(o, self._output_slots[o]) for o in outputs]

    def _require_profiler(self) -> Profiler:
        if self._profiler is None:
            raise EdgeRuntimeError("profiling is off for this session: load it with profile=True")
        return self._profiler


def _spec_shape(shape) -> Optional[tuple]:
    return None if shape is None else tuple(shape)


def _max_abs_error(got: np.ndarray, expected: np.ndarray) -> float:
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        return float("inf")
    if got.dtype.kind in "OUSb" or expected.dtype.kind in "OUSb":
        return 0.0 if np.array_equal(got, expected) else float("inf")
    if got.size == 0:
        return 0.0
    g, e = got.astype(np.float64), expected.astype(np.float64)
    same = (g == e) | (np.isnan(g) & np.isnan(e))  # equal infinities and NaNs are no error
    diff = np.where(same, 0.0, np.abs(g - e))
    return float(np.nan_to_num(diff.max(), nan=np.inf))
