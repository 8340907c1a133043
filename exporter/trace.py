"""The tracer: records every primitive op of one forward pass into a `Graph`, through the op
registry's tracer hook, lowering each op to ONNX nodes as it runs.

How dynamic axes work: before tracing, `probe_run` runs the model once more with every dynamic
axis at another size and records each op call (attributes, input and output shapes). The traced
run then compares each call with its probe twin: an integer that differs between the two runs
(a reshape target, a slice bound, a dim of a value) is a function of the dynamic sizes, fitted as
`a * size + b` (or `(size + b) // q`), and recorded as Shape/Gather/Mul/Add/Concat nodes on the
graph input instead of a constant. So `x.view(x.size(0), -1)`, `x.flatten(1)` and
`x.reshape(-1, 4)` all export for any batch size, without symbolic ints in the eager code.

Lowering: an op with a `lowering` function (authoring/ops/*.py, beside the op) calls it with an
`Emitter`; otherwise its `Onnx` spec for the target opset is emitted as one node.

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
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from modelkit.authoring.ops import registry
from modelkit.authoring.ops.registry import INPLACE_ASSIGN, Attr, onnx_lowering
from modelkit.authoring.tensor import Tensor
from modelkit.exporter.errors import ExportError, TracerWarning
from modelkit.exporter.ir import Graph, Value, dtype_name
from modelkit.exporter.onnx_writer import ONNX_TYPE_OF

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODELKIT_DIRS = tuple(os.path.join(_PACKAGE_ROOT, c) + os.sep
                       for c in ("authoring", "exporter", "edge_runtime", "converters", "cli"))

# Attribute-inputs that ONNX takes as 0-d tensors of the op's input dtype (the rest are 1-D int64).
_SCALAR_ATTR_INPUTS = {("Clip", "min"), ("Clip", "max"), ("Pad", "value"), ("Dropout", "p")}

# Ops that a forward pass in eval mode never calls, so an export never meets them.
TRAINING_ONLY = {
    "batch_norm_train": "BatchNorm normalises with batch statistics only in training mode; "
                        "eval mode (which export uses) calls batch_norm with running statistics",
    "dropout": "F.dropout returns its input unchanged in eval mode, so no op is recorded",
}


def user_source() -> str:
    """'file:line' of the innermost frame outside the modelkit package (the user's model code);
    '' when the whole stack is modelkit's own (e.g. an `nn.Sequential` exported by the CLI).

    Example:
        >>> user_source().endswith(")") or ":" in user_source() or user_source() == ""
        True
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_MODELKIT_DIRS):
        frame = frame.f_back
    return "" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


@dataclass
class Call:
    """One op call seen by the probe run: what the traced run compares against."""

    op: str
    attrs: dict
    input_shapes: tuple
    output_shapes: tuple
    source: str


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
                          tuple(tuple(t.array.shape) for t in outputs), user_source()))

    previous, registry.tracer = registry.tracer, record
    try:
        model(*args)
    finally:
        registry.tracer = previous
    return calls


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

    def _constant(self, tensor: Tensor, probe_shape, source: str, module: str) -> Value:
        array = tensor.array
        name = self.param_names.get(id(array))
        if name is not None:
            value = self.graph.values.get(name) or self.graph.add_initializer(name, array)
        elif probe_shape is not None and tuple(probe_shape) != array.shape:
            value = self._constant_of_shape(array, probe_shape, source, module)
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
    @contextlib.contextmanager
    def active(self):
        """Within this block every primitive call is recorded into the graph."""
        previous, registry.tracer = registry.tracer, self.record
        try:
            yield self
        finally:
            registry.tracer = previous

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
        source = user_source()
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
                value = self._constant(t, probe.input_shapes[j] if probe else None, source,
                                       module)
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
        source = user_source()
        filename, _, line = source.rpartition(":")
        message = (f"{source}: converting a traced tensor to a Python value with {how} bakes the "
                   "value seen while tracing into the exported model: it will always take this "
                   "branch / use this value, whatever its input")
        warnings.warn_explicit(message, TracerWarning, filename or "<unknown>",
                               int(line) if line.isdigit() else 0)

    @contextlib.contextmanager
    def conversion_warnings(self):
        """Within this block, Tensor.item/tolist/numpy/bool/float/int/index and boolean-mask
        indexing warn on traced tensors (the methods are wrapped on the class and restored on
        exit; NOTE: so an export is not thread-safe with eager code running beside it)."""
        names = {"item": ".item()", "tolist": ".tolist()", "numpy": ".numpy()",
                 "__bool__": "bool()", "__float__": "float()", "__int__": "int()",
                 "__index__": "an index (operator.index)"}
        originals = {name: Tensor.__dict__[name] for name in names}

        def wrap(original, how):
            def method(t, *args, **kwargs):
                self.warn_conversion(t, how)
                with self.quiet():
                    return original(t, *args, **kwargs)
            return method

        def wrap_indexing(original):
            # a boolean mask becomes index positions in Python (normalize_key): baked in too
            def method(t, key, *value):
                for k in key if isinstance(key, tuple) else (key,):
                    if isinstance(k, Tensor) and k.array.dtype == np.bool_ and k.array.ndim:
                        self.warn_conversion(k, "a boolean mask index (x[mask])")
                return original(t, key, *value)
            return method

        for name in ("__getitem__", "__setitem__"):
            originals[name] = Tensor.__dict__[name]
            setattr(Tensor, name, wrap_indexing(originals[name]))
        for name, how in names.items():
            setattr(Tensor, name, wrap(originals[name], how))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(Tensor, name, original)

    @contextlib.contextmanager
    def module_paths(self):
        """Within this block, nodes get the path of the innermost module whose forward runs."""
        from modelkit.authoring.nn.module import (register_module_forward_hook,
                                                  register_module_forward_pre_hook)

        def enter(module, args):
            self.module_stack.append(self.module_names.get(id(module), type(module).__name__))

        def leave(module, args, output):
            if self.module_stack:
                self.module_stack.pop()

        pre, post = register_module_forward_pre_hook(enter), register_module_forward_hook(leave)
        try:
            yield
        finally:
            pre.remove()
            post.remove()
            self.module_stack.clear()

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
