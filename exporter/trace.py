"""The tracer: records every primitive op of one forward pass into a `Graph`, through the op
registry's tracer hook, lowering each op to ONNX nodes as it runs.

How dynamic axes work: before tracing, `probe_run` runs the model once more with every dynamic
axis at another size and records each op call (attributes, input and output shapes). The traced
run then compares each call with its probe twin: an integer that differs between the two runs
(a reshape target, a slice bound, a dim of a value) is a function of the dynamic sizes, fitted as
`a * size + b` (or `(size + b) // q`), and recorded as Shape/Gather/Mul/Add/Concat nodes on the
graph input instead of a constant. So `x.view(x.size(0), -1)`, `x.flatten(1)` and
`x.reshape(-1, 4)` all export for any batch size, without symbolic ints in the eager code.

Sources: each node records where its op call comes from, as PyTorch's exporter does: the
innermost line of user code inside the model's forward (see `Tracer.source`); for a built-in
container exported as a whole, the line that constructed the layer (`construction_sites`).

Threads: the registry hook, Tensor's conversion methods and the module hooks are replaced for the
time of a trace by dispatchers that act only in the tracing thread (see `_recording`).

Lowering: an op with a `lowering` function (authoring/ops/*.py, beside the op) calls it with an
`Emitter`; otherwise its `Onnx` spec for the target opset is emitted as one node. A module with a
lowering in `module_lowering.LOWERINGS` (nn.GRU, nn.LSTM) is recorded as one call: its forward
runs eagerly recording nothing, then its lowering emits whole ONNX nodes for it.

Example:
    >>> import numpy as np, modelkit.authoring as mk
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); tracer = Tracer(g, opset=17)
    >>> x = tracer.add_input("x", mk.ones(2, 3), {})
    >>> with tracer.active():
    ...     y = (x * 2).relu()
    >>> [n.op_type for n in g.nodes]
    ['Mul', 'Relu']
"""

from __future__ import annotations

import contextlib
import functools
import os
import site
import sys
import sysconfig
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np

from modelkit.authoring.ops import registry
from modelkit.authoring.nn.module import Module
from modelkit.authoring.ops.registry import INPLACE_ASSIGN, Attr, onnx_lowering
from modelkit.authoring.tensor import Tensor
from modelkit.exporter.errors import ExportError, TracerWarning
from modelkit.exporter.ir import Graph, Value, dtype_name
from modelkit.exporter.module_lowering import LOWERINGS
from modelkit.exporter.onnx_writer import ONNX_TYPE_OF

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODELKIT_DIRS = tuple(os.path.join(_PACKAGE_ROOT, c) + os.sep
                       for c in ("authoring", "exporter", "edge_runtime", "converters", "cli"))
# Python's own library and installed packages (click, pytest...): never the user's model code.
_LIBRARY_DIRS = tuple(sorted({os.path.join(f(path), "")
                              for path in (*(sysconfig.get_paths()[key] for key in (
                                  "stdlib", "platstdlib", "purelib", "platlib")),
                                  *site.getsitepackages(), site.getusersitepackages())
                              for f in (os.path.abspath, os.path.realpath)}))
_NOT_USER_CODE = _MODELKIT_DIRS + _LIBRARY_DIRS + ("<frozen ",)

# Attribute-inputs that ONNX takes as 0-d tensors of the op's input dtype (the rest are 1-D int64).
_SCALAR_ATTR_INPUTS = {("Clip", "min"), ("Clip", "max"), ("Pad", "value"), ("Dropout", "p")}

# The probe run keeps the values of inputs up to this many elements: a Python number computed from
# a dynamic size (`x.sum(0) / x.size(0)`) reaches an op as such a small constant tensor.
_PROBE_VALUE_LIMIT = 16

# Ops that a forward pass in eval mode never calls, so an export never meets them.
TRAINING_ONLY = {
    "batch_norm_train": "BatchNorm normalises with batch statistics only in training mode; "
                        "eval mode (which export uses) calls batch_norm with running statistics",
    "dropout": "F.dropout returns its input unchanged in eval mode, so no op is recorded",
}


def user_source() -> str:
    """'file:line' of the innermost frame of user code (outside the modelkit package, Python's
    library and installed packages); '' when there is none.

    Example:
        >>> user_source().startswith("<doctest ")
        True
    """
    frame = user_frame(sys._getframe(1))
    return "" if frame is None else location(frame)


def user_frame(frame, stop=None):
    """The innermost frame of user code from `frame` outward, looking no further than `stop`
    (a frame, excluded); None when there is none.

    Example:
        >>> user_frame(sys._getframe()).f_code.co_filename.startswith("<doctest ")
        True
    """
    while frame is not None and frame is not stop:
        if not frame.f_code.co_filename.startswith(_NOT_USER_CODE):
            return frame
        frame = frame.f_back
    return None


def location(frame) -> str:
    """'file:line' of a frame."""
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


# module -> 'file:line' of the user code that constructed it, for modules built inside
# `construction_sites()`; entries go away with their modules.
CONSTRUCTED_AT: "weakref.WeakKeyDictionary[Module, str]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def construction_sites():
    """Within this block, each `Module` constructed in this thread remembers the user's line that
    constructed it (in `CONSTRUCTED_AT`). Nodes that a built-in layer records where no user code
    runs (a built-in container as the whole model) point there, not into modelkit: wrap the
    code that builds a model to export in it (`modelkit export` wraps model.py's `build()`).

    It installs a profile function for this thread only (`sys.setprofile`), so tracing stays
    free of class patching; a profiler running in the same thread is suspended meanwhile.

    Example:
        >>> import modelkit.authoring as mk
        >>> with construction_sites():
        ...     layer = mk.nn.Linear(2, 2)
        >>> CONSTRUCTED_AT[layer].startswith("<doctest ")
        True
    """
    module_init = Module.__init__.__code__

    def record(frame, event, arg):
        if event == "call" and frame.f_code is module_init:
            module = frame.f_locals.get("self")
            site = _construction_site(frame.f_back, module)
            if site:
                CONSTRUCTED_AT[module] = site

    previous = sys.getprofile()
    sys.setprofile(record)
    try:
        yield
    finally:
        sys.setprofile(previous)


def _construction_site(frame, module) -> str:
    """The user line that constructed `module`: skips library frames and the module's own
    `__init__` (a user subclass calling `super().__init__()`), so `Net()` names the line of
    `Net()`, and `self.conv = nn.Conv2d(...)` in `Net.__init__` names that line."""
    while frame is not None:
        frame = user_frame(frame)
        if frame is None:
            return ""
        if not (frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is module):
            return location(frame)
        frame = frame.f_back
    return ""


@dataclass
class Call:
    """One op call seen by the probe run: what the traced run compares against."""

    op: str
    attrs: dict
    input_shapes: tuple
    output_shapes: tuple
    source: str
    input_values: tuple  # copies of the small inputs (None for the others): sizes as numbers


@dataclass(frozen=True)
class DynamicAxis:
    """A dynamic dim of a graph input: its name and its sizes in the traced and probe runs."""

    name: str
    input: Value
    axis: int
    size: int
    probe_size: int


def probe_run(model, args) -> list[Call]:
    """Run `model(*args)` recording every op call's attrs and shapes (no graph is built).

    Example:
        >>> import modelkit.authoring as mk
        >>> [c.op for c in probe_run(lambda x: x.relu() + 1, (mk.ones(2),))]
        ['relu', 'add']
    """
    calls = []

    def record(op, inputs, attrs, outputs):
        calls.append(Call(op.name, attrs, tuple(None if t is None else tuple(t.array.shape)
                                                for t in inputs),
                          tuple(tuple(t.array.shape) for t in outputs), user_source(),
                          tuple(t.array.copy() if t is not None and t.array.size <=
                                _PROBE_VALUE_LIMIT else None for t in inputs)))

    with _recording(record, None):
        model(*args)
    return calls


# ---- the hooks, per thread ------------------------------------------------------------------
# The registry's tracer hook, the Tensor conversion methods and the global module hooks are
# process-wide; while some thread traces they are replaced by dispatchers that act only for the
# thread that traces, so an eager forward running in another thread meanwhile records nothing
# and warns nothing (and two threads can trace at once).

class _ThisThread(threading.local):
    record = None  # fn(op, inputs, attrs, outputs) of the trace or probe running in this thread
    tracer = None  # its Tracer (module paths, conversion warnings); None for a probe run
    lowered = None  # (module, its ModuleLowering, its input tensors) while it runs as one call


_THIS_THREAD = _ThisThread()
_CONVERSIONS = {"item": ".item()", "tolist": ".tolist()", "numpy": ".numpy()",
                "__bool__": "bool()", "__float__": "float()", "__int__": "int()",
                "__index__": "an index (operator.index)"}
_install_lock = threading.Lock()
_installed: dict = {}  # while some thread traces: "count", "registry" (the hook replaced),
#                        "methods" (the Tensor methods replaced), "handles" (module hooks)


@contextlib.contextmanager
def _recording(record, tracer):
    # `lowered` is reset too: a forward that raised inside a lowered module never left it
    previous = _THIS_THREAD.record, _THIS_THREAD.tracer, _THIS_THREAD.lowered
    _THIS_THREAD.record, _THIS_THREAD.tracer, _THIS_THREAD.lowered = record, tracer, None
    _install()
    try:
        yield
    finally:
        _THIS_THREAD.record, _THIS_THREAD.tracer, _THIS_THREAD.lowered = previous
        _uninstall()


def _install() -> None:
    from modelkit.authoring.nn.module import (register_module_forward_hook,
                                              register_module_forward_pre_hook)
    with _install_lock:
        if _installed:
            _installed["count"] += 1
            return
        methods = {name: Tensor.__dict__[name]
                   for name in (*_CONVERSIONS, "__getitem__", "__setitem__")}
        _installed.update(count=1, registry=registry.tracer, methods=methods, handles=(
            register_module_forward_pre_hook(_enter_module),
            register_module_forward_hook(_leave_module)))
        for name, how in _CONVERSIONS.items():
            setattr(Tensor, name, _warning_conversion(methods[name], how))
        for name in ("__getitem__", "__setitem__"):
            setattr(Tensor, name, _warning_mask_index(methods[name]))
        registry.tracer = _dispatch


def _uninstall() -> None:
    with _install_lock:
        _installed["count"] -= 1
        if _installed["count"]:
            return
        registry.tracer = _installed["registry"]
        for name, method in _installed["methods"].items():
            setattr(Tensor, name, method)
        for handle in _installed["handles"]:
            handle.remove()
        _installed.clear()


def _dispatch(op, inputs, attrs, outputs):
    record = _THIS_THREAD.record
    if record is not None:
        if _THIS_THREAD.lowered is None:  # inside a lowered module, its ops are not recorded
            record(op, inputs, attrs, outputs)
    elif _installed.get("registry") is not None:  # a hook set before the trace: other threads
        _installed["registry"](op, inputs, attrs, outputs)


def _enter_module(module, args):
    if _THIS_THREAD.record is None or _THIS_THREAD.lowered is not None:
        return
    lowering = LOWERINGS.get(type(module))
    if module._forward_pre_hooks or module._forward_hooks:
        lowering = None  # the module's own hooks may change its inputs or outputs: trace them
    kwargs = _call_kwargs(sys._getframe(1)) if lowering is not None else None
    if kwargs is not None:
        inputs = lowering.inputs(module, args, kwargs)
        if inputs is not None:
            _THIS_THREAD.lowered = (module, lowering, inputs)
    if _THIS_THREAD.tracer is not None:
        _THIS_THREAD.tracer.enter_module(module)


def _leave_module(module, args, output):
    lowered = _THIS_THREAD.lowered
    if _THIS_THREAD.record is None or (lowered is not None and lowered[0] is not module):
        return
    if lowered is not None:
        # the probe and the traced run both record the module call as one op, so they compare
        _THIS_THREAD.lowered = None
        _, lowering, inputs = lowered
        outputs = _flat_tensors(output)
        _THIS_THREAD.record(lowering, inputs, {"module": module}, outputs)
    if _THIS_THREAD.tracer is not None:
        _THIS_THREAD.tracer.leave_module()


def _call_kwargs(frame) -> Optional[dict]:
    """The keyword arguments of the `Module.__call__` running in `frame` (module hooks see only
    the positional ones, and a lowering must see every input); None when `frame` is not one."""
    if frame is None or frame.f_code is not Module.__call__.__code__:
        return None
    return frame.f_locals.get("kwargs", {})


def _flat_tensors(result) -> list:
    """The tensors of a module's output (a tensor, or nested tuples of them), in order."""
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _flat_tensors(item)]
    return []


def _warning_conversion(original, how):
    def method(t, *args, **kwargs):
        tracer = _THIS_THREAD.tracer
        if tracer is None:
            return original(t, *args, **kwargs)
        tracer.warn_conversion(t, how)
        with tracer.quiet():
            return original(t, *args, **kwargs)
    return functools.wraps(original)(method)


def _warning_mask_index(original):
    # a boolean mask becomes index positions in Python (normalize_key): baked in too
    def method(t, key, *value):
        tracer = _THIS_THREAD.tracer
        if tracer is not None:
            for k in key if isinstance(key, tuple) else (key,):
                if isinstance(k, Tensor) and k.array.dtype == np.bool_ and k.array.ndim:
                    tracer.warn_conversion(k, "a boolean mask index (x[mask])")
        return original(t, key, *value)
    return functools.wraps(original)(method)


class Tracer:
    """Builds `graph` from the op calls of a forward pass run inside `tracer.active()`.

    `param_names` maps id(array) of each parameter and buffer to its state_dict key (those arrays
    become initializers of that name); `probe` is `probe_run`'s record at other dynamic sizes;
    `module_names` maps id(module) to its path for the nodes' `module` field.
    """

    def __init__(self, graph: Graph, opset: int, param_names: Optional[dict] = None,
                 probe: Optional[list] = None, module_names: Optional[dict] = None):
        self.graph = graph
        self.opset = opset
        self.param_names = param_names or {}
        self.probe = probe
        self.module_names = module_names or {}
        self.module_stack: list[str] = []
        self._running_modules: list[Module] = []
        self._run_frame = None  # the frame of `run`: frames outside it are not the model's
        self.axes: list[DynamicAxis] = []
        self.calls = 0
        self._by_tensor: dict[int, Value] = {}
        self._by_array: dict[int, Value] = {}
        self._alive: list = []  # keeps traced objects alive, so their ids stay unique
        self._concrete: dict[Value, tuple] = {}  # value -> (example shape, numpy dtype)
        self._dynamic_dims: dict[Value, tuple] = {}  # value -> dims that change in the probe
        self._depends_on_input: set = set()
        self._size_cache: dict = {}
        self._quiet = 0

    # ---- graph inputs and values of tensors -------------------------------------------------
    def add_input(self, name: str, tensor: Tensor, axes: dict) -> Tensor:
        """Declare `tensor` a graph input; `axes` maps dim -> (symbolic name, probe size)."""
        shape = tuple(axes[d][0] if d in axes else s for d, s in enumerate(tensor.array.shape))
        value = self.graph.add_input(name, dtype_name(tensor.array), shape)
        for d, (dim_name, probe_size) in sorted(axes.items()):
            self.axes.append(DynamicAxis(dim_name, value, d, tensor.array.shape[d], probe_size))
        self._bind(tensor, value)
        self._dynamic_dims[value] = tuple(sorted(axes))
        self._depends_on_input.add(value)
        return tensor

    def value_of(self, tensor: Tensor) -> Optional[Value]:
        """The graph value a tensor holds, or None for a tensor the trace has not seen."""
        return self._by_tensor.get(id(tensor)) or self._by_array.get(id(tensor.array))

    def depends_on_input(self, tensor: Tensor) -> bool:
        value = self.value_of(tensor)
        return value is not None and value in self._depends_on_input

    def _bind(self, tensor: Tensor, value: Value) -> None:
        self._alive.append(tensor)
        self._alive.append(tensor.array)
        self._by_tensor[id(tensor)] = value
        self._by_array[id(tensor.array)] = value
        self._concrete.setdefault(value, (tuple(tensor.array.shape), tensor.array.dtype))

    def _constant(self, tensor: Tensor, probe_shape, probe_value, source: str,
                  module: str) -> Value:
        array = tensor.array
        name = self.param_names.get(id(array))
        if name is not None:
            value = self.graph.values.get(name) or self.graph.add_initializer(name, array)
        elif probe_shape is not None and tuple(probe_shape) != array.shape:
            value = self._constant_of_shape(array, probe_shape, source, module)
        elif probe_value is not None and (probe_value.dtype != array.dtype
                                          or probe_value.tobytes() != array.tobytes()):
            value = self._constant_of_size(array, probe_value, source, module)
        else:
            base = f"{module}.const" if module else "const"
            value = self.graph.add_initializer(self.graph.unique_value_name(base), array.copy())
        self._bind(tensor, value)
        return value

    def _constant_of_shape(self, array, probe_shape, source, module) -> Value:
        """A tensor made in forward whose shape follows a dynamic axis: ConstantOfShape when it
        holds one value (zeros, ones, full), else an error (its values cannot follow)."""
        flat = array.reshape(-1)
        if flat.size == 0 or not (flat == flat[0]).all():
            raise ExportError(
                f"{source}: a tensor created in forward has shape {array.shape} here and "
                f"{tuple(probe_shape)} at another size of the dynamic axes, and its values vary: "
                "the export cannot follow it; compute it from the input tensors instead")
        emitter = Emitter(self, None, {}, {}, source, module)
        dims = emitter.ints([emitter.sized(s, p) for s, p in zip(array.shape, probe_shape)])
        value = emitter.op("ConstantOfShape", dims, value=flat[:1].copy())
        self._set_meta(value, array, probe_shape)
        return value

    def _constant_of_size(self, array, probe_value, source, module) -> Value:
        """A one-element tensor made in forward whose value follows a dynamic axis (a Python
        number computed from `x.size(0)`): computed from the input's shape, as PyTorch's tracer
        records `x.size(0)`; other values that change with the dynamic sizes are an error."""
        here, there = array.reshape(-1)[:1], probe_value.reshape(-1)[:1]
        integral = array.size == 1 and probe_value.size == 1 and all(
            np.isfinite(v).all() and (v == np.round(v)).all() for v in (here, there))
        fit = integral and _fit(int(here[0]), int(there[0]), self.axes)
        if not fit:
            raise ExportError(
                f"{source}: a tensor created in forward holds {array.reshape(-1)[:4].tolist()} "
                f"here and {probe_value.reshape(-1)[:4].tolist()} at another size of the dynamic "
                "axes: the export cannot follow it (only a * size + b is followed); compute it "
                "from the input tensors instead (e.g. x.mean(0), not x.sum(0) / x.size(0))")
        emitter = Emitter(self, None, {}, {}, source, module)
        value = emitter.sized(int(here[0]), int(there[0]))
        if array.shape != (1,):
            value = emitter.op("Reshape", value, emitter.const(np.array(array.shape, np.int64)))
        if array.dtype != np.int64:
            value = emitter.op("Cast", value, to=emitter.onnx_dtype(array.dtype))
        self._set_meta(value, array, array.shape)
        self._depends_on_input.add(value)
        return value

    def _set_meta(self, value: Value, array: np.ndarray, probe_shape) -> None:
        """Dtype and shape of a traced value; dims that change in the probe run get a name
        (`batch`, `2*batch`, `batch+1`...) and are remembered as dynamic."""
        dynamic = tuple(d for d, (s, p) in enumerate(zip(array.shape, probe_shape)) if s != p)
        value.dtype = dtype_name(array)
        value.shape = tuple(self._dim_name(value, d, s, probe_shape[d]) if d in dynamic else s
                            for d, s in enumerate(array.shape))
        self._dynamic_dims[value] = dynamic
        self._concrete[value] = (tuple(array.shape), array.dtype)

    def _dim_name(self, value: Value, d: int, size: int, probe_size: int) -> str:
        fit = _fit(size, probe_size, self.axes)
        if fit is None:
            return f"{value.name}_dim{d}"
        axis, a, b, q = fit
        name = axis.name if a == 1 else f"{a}*{axis.name}"
        name = f"{name}{b:+d}" if b else name
        return f"({name})//{q}" if q != 1 else name

    # ---- the registry hook ------------------------------------------------------------------
    def run(self, model, args):
        """`model(*args)` with every op call recorded, conversion warnings and module paths on.

        Example:
            >>> import modelkit.authoring as mk
            >>> from modelkit.exporter.ir import Graph
            >>> g = Graph(); tracer = Tracer(g, opset=17); x = tracer.add_input("x", mk.ones(2), {})
            >>> _ = tracer.run(lambda t: t.exp(), (x,)); [n.op_type for n in g.nodes]
            ['Exp']
        """
        self._run_frame = sys._getframe()
        try:
            with self.active():
                return model(*args)
        finally:
            self._run_frame = None

    def source(self) -> str:
        """Where the op call being recorded comes from, as PyTorch's exporter reports it: the
        innermost user frame inside the model's forward (the user's line in their forward, or
        the line that calls a built-in layer). When the forward runs no user code at all (a
        built-in container as the whole model), the user line that constructed the innermost
        running module (see `construction_sites`), else the user line that started the export;
        '' when none is known."""
        frame = sys._getframe(1)
        inside = user_frame(frame, self._run_frame)
        if inside is not None:
            return location(inside)
        for module in reversed(self._running_modules):
            site = CONSTRUCTED_AT.get(module)
            if site:
                return site
        outside = user_frame(self._run_frame or frame)
        return "" if outside is None else location(outside)

    @contextlib.contextmanager
    def active(self):
        """Within this block, in this thread, every primitive call is recorded into the graph,
        nodes get module paths and Python conversions of traced tensors warn."""
        try:
            with _recording(self.record, self):
                yield self
        finally:
            self.module_stack.clear()
            self._running_modules.clear()

    @contextlib.contextmanager
    def quiet(self):
        """No conversion warnings inside (a conversion calling another one warns once)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def record(self, op, inputs, attrs, outputs) -> None:
        """The registry's tracer hook: lower one op call into the graph."""
        index, self.calls = self.calls, self.calls + 1
        source = self.source()
        module = self.module_stack[-1] if self.module_stack else ""
        probe = self._probe_call(index, op, source)
        if op is INPLACE_ASSIGN:
            value = self.value_of(inputs[0])
            if value is not None:
                self._bind(outputs[0], value)
            return
        values = []
        for j, t in enumerate(inputs):
            if t is None:
                values.append(None)
                continue
            value = self.value_of(t)
            if value is None:
                value = self._constant(t, probe.input_shapes[j] if probe else None,
                                       probe.input_values[j] if probe else None, source, module)
            values.append(value)
        emitter = Emitter(self, op, attrs, probe.attrs if probe else attrs, source, module)
        results = emitter.lower(values)
        results = results if isinstance(results, tuple) else (results,)
        if len(results) != len(outputs):
            raise ExportError(f"{source}: the lowering of op '{op.name}' gave {len(results)} "
                              f"values for {len(outputs)} outputs")
        depends = any(v in self._depends_on_input for v in values if v is not None)
        for k, (t, value) in enumerate(zip(outputs, results)):
            if value.producer is None and value.data is None and value not in self._concrete:
                raise ExportError(f"{source}: the lowering of op '{op.name}' returned a value "
                                  "no node produces")
            probe_shape = probe.output_shapes[k] if probe else t.array.shape
            if value.producer is not None and value not in self._concrete:
                self._set_meta(value, t.array, probe_shape)
            self._bind(t, value)
            if depends:
                self._depends_on_input.add(value)

    def check_probe_complete(self) -> None:
        """After the traced run: the probe run must not have run more ops."""
        if self.probe is not None and len(self.probe) > self.calls:
            extra = self.probe[self.calls]
            raise ExportError(
                f"{extra.source}: with the dynamic axes at another size, forward ran a different "
                f"sequence of ops (more of them, from '{extra.op}' here on); Python control "
                "flow that depends on a dynamic size cannot be exported with dynamic_axes")

    def _probe_call(self, index: int, op, source: str) -> Optional[Call]:
        if self.probe is None:
            return None
        call = self.probe[index] if index < len(self.probe) else None
        if call is None or call.op != op.name:
            seen = call.op if call is not None else "nothing"
            raise ExportError(
                f"{source}: with the dynamic axes at another size, forward ran a different "
                f"sequence of ops (op #{index} is '{op.name}' here, '{seen}' there); Python "
                "control flow that depends on a dynamic size cannot be exported with dynamic_axes")
        return call

    # ---- conversion warnings ----------------------------------------------------------------
    def warn_conversion(self, tensor: Tensor, how: str) -> None:
        """Warn (TracerWarning at the user's line) when a traced value becomes a Python value."""
        if self._quiet or not self.depends_on_input(tensor):
            return
        source = self.source()
        filename, _, line = source.rpartition(":")
        message = (f"{source}: converting a traced tensor to a Python value with {how} bakes the "
                   "value seen while tracing into the exported model: it will always take this "
                   "branch / use this value, whatever its input")
        warnings.warn_explicit(message, TracerWarning, filename or "<unknown>",
                               int(line) if line.isdigit() else 0)

    def enter_module(self, module) -> None:
        """A module's forward starts: its nodes get its path."""
        self.module_stack.append(self.module_names.get(id(module), type(module).__name__))
        self._running_modules.append(module)

    def leave_module(self) -> None:
        if self.module_stack:
            self.module_stack.pop()
            self._running_modules.pop()

    # ---- dynamic sizes as graph values ------------------------------------------------------
    def size_value(self, size: int, probe_size: int, source: str, module: str):
        """`size` when it does not change in the probe run, else a 1-D int64 value computing it
        from a dynamic input dim (`a * dim + b` or `(dim + b) // q`)."""
        if size == probe_size:
            return size
        key = (size, probe_size)
        if key in self._size_cache:
            return self._size_cache[key]
        fit = _fit(size, probe_size, self.axes)
        if fit is None:
            names = ", ".join(f"{a.name} ({a.size} -> {a.probe_size})" for a in self.axes)
            raise ExportError(f"{source}: an integer in the model ({size}) changes to "
                              f"{probe_size} with the dynamic axes [{names}], in a way the tracer "
                              "cannot express as a * axis + b; compute it with shape ops on "
                              "one dynamic dim at a time")
        axis, a, b, q = fit
        emitter = Emitter(self, None, {}, {}, source, module)
        value = self._axis_value(axis, emitter)
        if a != 1:
            value = emitter.op("Mul", value, emitter.const(np.array([a], np.int64)))
        if b:
            value = emitter.op("Add", value, emitter.const(np.array([b], np.int64)))
        if q != 1:
            value = emitter.op("Div", value, emitter.const(np.array([q], np.int64)))
        self._size_cache[key] = value
        return value

    def _axis_value(self, axis: DynamicAxis, emitter: "Emitter") -> Value:
        key = ("axis", axis.input.name, axis.axis)
        if key not in self._size_cache:
            shape_key = ("shape", axis.input.name)
            if shape_key not in self._size_cache:
                self._size_cache[shape_key] = emitter.op("Shape", axis.input)
            self._size_cache[key] = emitter.op(
                "Gather", self._size_cache[shape_key],
                emitter.const(np.array([axis.axis], np.int64)), axis=0)
        return self._size_cache[key]


def _fit(size: int, probe_size: int, axes) -> Optional[tuple]:
    """(axis, a, b, q) with value = (a * dim + b) // q for both runs, integer a preferred."""
    for axis in axes:
        step, change = axis.probe_size - axis.size, probe_size - size
        if change % step == 0 and change:
            a = change // step
            return axis, a, size - a * axis.size, 1
    for axis in axes:
        step, change = axis.probe_size - axis.size, probe_size - size
        if change and step % change == 0:
            q = step // change
            b = size * q - axis.size
            if (axis.probe_size + b) // q == probe_size and (axis.size + b) // q == size:
                return axis, 1, b, q
    return None


class Emitter:
    """What a lowering function gets as `g`: builds ONNX nodes for one op call.

    - `g.op(op_type, *inputs, outputs=1, **attributes)`: add a node; its output value (or a tuple)
    - `g.const(array, dtype=None)`: a constant (initializer); `g.ints([...])`: a 1-D int64 value
      from ints and 1-element int64 values (concatenated when some are computed)
    - `g.attr_ints(name)`: the op attribute `name` (int or ints) as a 1-D int64 value; entries
      that follow a dynamic axis are computed from the input's shape
    - `g.sized(example, probe)`: an int, or a computed value when it follows a dynamic axis;
      `g.probe_attrs`: the op's attributes in the probe run (equal to `g.attrs` without one)
    - `g.shape(v)` / `g.dtype(v)`: example shape and numpy dtype of an input value;
      `g.is_dynamic(v)`: whether some dim of `v` follows a dynamic axis
    - `g.traced(array)`: the value of a traced tensor holding `array` (e.g. an index), or None
    - `g.onnx_dtype(np_dtype)`: the ONNX TensorProto code; `g.opset`; `g.spec`: the op's `Onnx`
      spec for this opset (or None); `g.emit_spec()`: emit it; `g.fail(message)`: ExportError
    """

    def __init__(self, tracer: Tracer, op, attrs: dict, probe_attrs: dict, source: str,
                 module: str):
        self.tracer = tracer
        self.op_def = op
        self.attrs = attrs
        self.probe_attrs = probe_attrs
        self.source = source
        self.module = module
        self.opset = tracer.opset
        self.spec = onnx_lowering(op, tracer.opset) if op is not None else None
        self.inputs: list = []

    def lower(self, inputs: list):
        self.inputs = inputs
        if self.op_def.lower is not None:
            return self.op_def.lower(self, *inputs, **self.attrs)
        if self.spec is None:
            self.fail(f"op '{self.op_def.name}' has no ONNX lowering at opset {self.opset}")
        return self.emit_spec()

    # -- building blocks ------------------------------------------------------------------------
    def op(self, op_type: str, *inputs, outputs: int = 1, **attributes):
        while inputs and inputs[-1] is None:
            inputs = inputs[:-1]
        attributes = {k: _onnx_attribute(v) for k, v in attributes.items() if v is not None}
        node = self.tracer.graph.add_node(op_type, list(inputs), outputs, attributes,
                                          source=self.source, module=self.module)
        return node.outputs[0] if outputs == 1 else node.outputs

    def const(self, value, dtype=None) -> Value:
        array = np.array(value, dtype=dtype)
        base = f"{self.module}.const" if self.module else "const"
        return self.tracer.graph.add_initializer(self.tracer.graph.unique_value_name(base), array)

    def ints(self, entries) -> Value:
        pieces, run = [], []
        for entry in entries:
            if isinstance(entry, Value):
                if run:
                    pieces.append(self.const(np.array(run, np.int64)))
                    run = []
                pieces.append(entry)
            else:
                run.append(int(entry))
        if run or not pieces:
            pieces.append(self.const(np.array(run, np.int64)))
        return pieces[0] if len(pieces) == 1 else self.op("Concat", *pieces, axis=0)

    def sized(self, example: int, probe: int):
        return self.tracer.size_value(int(example), int(probe), self.source, self.module)

    def attr_ints(self, name: str) -> Value:
        value, probe = self.attrs[name], self.probe_attrs.get(name, self.attrs[name])
        if isinstance(value, (int, np.integer)):
            value, probe = (value,), (probe,)
        return self.ints([self.sized(v, p) for v, p in zip(value, probe)])

    def shape(self, value: Value) -> tuple:
        if value.data is not None:
            return value.data.shape
        return self.tracer._concrete[value][0]

    def dtype(self, value: Value) -> np.dtype:
        if value.data is not None:
            return value.data.dtype
        return self.tracer._concrete[value][1]

    def is_dynamic(self, value: Value) -> bool:
        return bool(self.tracer._dynamic_dims.get(value))

    def traced(self, array) -> Optional[Value]:
        return self.tracer._by_array.get(id(array))

    @staticmethod
    def onnx_dtype(dtype) -> int:
        return ONNX_TYPE_OF[np.dtype(dtype).name]

    def fail(self, message: str):
        where = f"{self.source}: " if self.source else ""
        raise ExportError(f"{where}{message}")

    # -- the spec ---------------------------------------------------------------------------
    def emit_spec(self):
        spec = self.spec
        if spec is None:
            self.fail(f"op '{self.op_def.name}' has no ONNX form at opset {self.opset}")
        attributes = {}
        for key, val in spec.attributes.items():
            if isinstance(val, Attr):
                val = self.attrs.get(val.name)
            if val is not None:
                attributes[key] = val
        extra = []
        for name in spec.inputs_from_attrs:
            val = self.attrs.get(name)
            if val is None:
                extra.append(None)
            elif (spec.op_type, name) in _SCALAR_ATTR_INPUTS:
                extra.append(self.const(np.array(val, dtype=self.dtype(self.inputs[0]))))
            elif spec.op_type == "CumSum":
                extra.append(self.const(np.array(val, np.int64)))
            else:
                extra.append(self.attr_ints(name))
        n_outputs = self.op_def.n_outputs or len(self.attrs.get("sizes", ())) or 1
        return self.op(spec.op_type, *self.inputs, *extra, outputs=n_outputs, **attributes)


def _onnx_attribute(value):
    """Python/numpy attribute values as the ONNX writer takes them."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return ONNX_TYPE_OF[np.dtype(value).name]
    if isinstance(value, tuple):
        return [_onnx_attribute(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
