"""The one registry of primitive ops: forward, backward (vjp) and ONNX lowering side by side.

A primitive is declared with `@primitive(name, onnx=Onnx(...))` on its forward
`fn(xp, *arrays, **attrs) -> array` (or a tuple of arrays when `n_outputs > 1`), and its vjp
with `@<op>.vjp` right below: `vjp(ctx, grad) -> tuple of input grads` (None for an input
that gets no gradient). `ctx` is the graph `Node`: `ctx.arrays` (the input arrays),
`ctx.out` (the output array, or tuple of them), `ctx.attrs`, `ctx.saved` (what a
`stash=True` forward returned beside its output) and `ctx.needs_input_grad`.

ONNX lowerings are data: `op.onnx` is a tuple of `Onnx` specs, one per opset where the op's
ONNX form changes (e.g. ReduceMean takes `axes` as an attribute before opset 18 and as an input
from 18); `onnx_lowering(op, opset)` picks the newest one not above the target opset, like
the onnx reference evaluator's versioned ops. When one node is not enough (no single ONNX op
matches, or ONNX needs inputs the op lacks), `@<op>.lowering` registers a function
`lower(g, *inputs, **attrs) -> output value(s)` beside the op that builds the ONNX nodes through
the exporter's emitter `g` (see `modelkit.exporter.trace.Emitter`; authoring never imports the
exporter: `g` is passed in). The exporter calls it instead of the spec; it may still emit the
spec for the target opset with `g.emit_spec()`.

`apply(op, *tensors, **attrs)` is the only way a Tensor is computed: Tensor methods,
`mk.*` functions and `nn.functional` all call it.

Tracer hook: set the module attribute `tracer` to a callable and every primitive call invokes
`tracer(op, inputs, attrs, outputs)` after computing (`inputs`/`outputs` are tuples of
Tensors, an omitted optional input is None). The exporter sets and resets it. An in-place op
(`x.add_(y)`, `x[i] = v`) is reported as its out-of-place primitive followed by
`tracer(INPLACE_ASSIGN, (result,), {}, (x,))`: from then on `x` holds `result`'s value.

Example:
    >>> import modelkit.authoring as mk
    >>> onnx_lowering(OPS["relu"], opset=17)
    Onnx(op_type='Relu', attributes={}, inputs_from_attrs=(), since=1)
    >>> apply(OPS["relu"], mk.tensor([-1.0, 2.0]))
    tensor([0., 2.])
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from modelkit.authoring.device import dispatch, op_module
from modelkit.authoring.grad_mode import state
from modelkit.authoring.errors import ShapeError

tracer: Optional[Callable] = None


@dataclass(frozen=True)
class Attr:
    """In an `Onnx` spec: take the value of this op attribute (by the primitive's attr name)."""

    name: str


@dataclass(frozen=True)
class Onnx:
    """How a primitive lowers to one ONNX node.

    `attributes` maps ONNX attribute names to constants or `Attr(name)` (copied from the op's
    attrs); `inputs_from_attrs` names op attrs that ONNX takes as extra int64 constant inputs
    after the tensor inputs (e.g. Reshape's shape, opset-13 axes); `since` is the lowest opset
    where this op type has these semantics.
    """

    op_type: str
    attributes: dict = field(default_factory=dict)
    inputs_from_attrs: tuple = ()
    since: int = 1


class OpDef:
    """One primitive op: forward, vjp, ONNX lowering. Registered in `OPS` under `name`."""

    __slots__ = ("name", "forward", "backward", "onnx", "lower", "n_outputs", "stash",
                 "saves_inputs", "saves_output", "backward_name")

    def __init__(self, name, forward, onnx, n_outputs=1, stash=False, saves_inputs=True,
                 saves_output=False):
        self.name = name
        self.forward = forward
        self.backward = None
        if onnx is None:
            onnx = ()
        elif isinstance(onnx, Onnx):
            onnx = (onnx,)
        self.onnx = tuple(sorted(onnx, key=lambda spec: spec.since))
        self.lower = None
        self.n_outputs = n_outputs
        self.stash = stash
        self.saves_inputs = saves_inputs
        self.saves_output = saves_output
        self.backward_name = "".join(p.capitalize() for p in name.split("_")) + "Backward0"

    @property
    def differentiable(self) -> bool:
        return self.backward is not None

    def vjp(self, fn):
        """Decorator: register `fn(ctx, *grads) -> tuple of input grads` as this op's vjp."""
        self.backward = fn
        return fn

    def lowering(self, fn):
        """Decorator: register `fn(g, *inputs, **attrs) -> value or tuple of values` as this
        op's ONNX lowering (used by the exporter instead of the `Onnx` spec)."""
        self.lower = fn
        return fn

    def __repr__(self):
        return f"<primitive {self.name}>"


OPS: dict[str, OpDef] = {}

INPLACE_ASSIGN = OpDef("inplace_assign", None, Onnx("Identity"))
"""Not a registered primitive: the tracer event for "this tensor now holds that value"."""


def primitive(name: str, *, onnx=None, n_outputs: int = 1, stash: bool = False,
              saves_inputs: bool = True, saves_output: bool = False):
    """Register the decorated forward as primitive `name`; returns its `OpDef`.

    `onnx`: an `Onnx` spec, a sequence of them (one per opset where the form changes), or None.

    `stash=True`: the forward returns `(output, saved)` and `saved` reaches the vjp as
    `ctx.saved` (e.g. a dropout mask); only the output becomes a Tensor.
    `saves_inputs=False`: the vjp never reads the input arrays, so modifying an input in place
    afterwards does not invalidate the graph (as for add, reshape). `saves_output=True`: the
    vjp reads `ctx.out` (exp, tanh, softmax...), so modifying the output in place does.

    Example:
        >>> @primitive("doc_twice")
        ... def doc_twice(xp, x):
        ...     return x * 2
        >>> OPS.pop("doc_twice").name
        'doc_twice'
    """
    def register(forward):
        if name in OPS:
            raise ValueError(f"primitive {name!r} is registered twice")
        op = OpDef(name, forward, onnx, n_outputs, stash, saves_inputs, saves_output)
        OPS[name] = op
        return op
    return register


def onnx_lowering(op: OpDef, opset: int) -> Optional[Onnx]:
    """The ONNX form of `op` for target `opset`: the newest spec with since <= opset, or None.

    Example:
        >>> onnx_lowering(OPS["mean"], 17).attributes["axes"]
        Attr(name='dim')
        >>> onnx_lowering(OPS["mean"], 18).inputs_from_attrs
        ('dim',)
    """
    chosen = None
    for spec in op.onnx:
        if spec.since <= opset:
            chosen = spec
    return chosen


class Node:
    """One recorded op call in the autograd graph (what PyTorch calls a grad_fn).

    `edges[i]` is where input i's gradient goes, fixed when the node is made: the producing
    (node, output index), or the leaf Tensor itself, or None when input i needs no gradient.
    (Taken at creation because an in-place op later rebinds the input Tensor to a new node.)
    `versions` holds (version cell, value, k) for every saved input k (and output ~k when the
    vjp reads outputs), to detect in-place changes of saved arrays.
    """

    __slots__ = ("op", "inputs", "edges", "arrays", "attrs", "out", "saved", "needs_input_grad",
                 "versions", "source", "freed", "hooks", "__weakref__")

    def __init__(self, op, inputs, arrays, attrs, out, saved, needs):
        self.op = op
        self.inputs = inputs
        self.edges = tuple([(t if t._node is None else (t._node, t._index)) if need else None
                            for t, need in zip(inputs, needs)])
        self.arrays = arrays
        self.attrs = attrs
        self.out = out
        self.saved = saved
        self.needs_input_grad = needs
        self.versions = tuple([(t._version, t._version[0], i)
                               for i, t in enumerate(inputs) if t is not None]
                              ) if op.saves_inputs else ()
        self.source = user_source() if state.anomaly else None
        self.freed = False
        self.hooks = None

    def name(self) -> str:
        return self.op.backward_name

    @property
    def next_functions(self):
        return tuple(e if isinstance(e, tuple) else (None, 0) for e in self.edges)

    def __repr__(self):
        return f"<{self.name()}>"


_PACKAGE_DIR = __file__.rsplit("/ops/", 1)[0]


def user_source() -> str:
    """'file:line' of the innermost caller outside modelkit.authoring (the user's code).

    Example:
        >>> user_source().endswith(">:1") or ":" in user_source()
        True
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def apply(op: OpDef, *inputs, **attrs):
    """Run primitive `op` on Tensors `inputs` (None for an omitted optional input), record
    the graph node when a gradient is needed, and return the output Tensor(s).

    Example:
        >>> import modelkit.authoring as mk
        >>> apply(OPS["add"], mk.ones(2), mk.ones(1))
        tensor([2., 2.])
    """
    arrays = tuple([t.array if t is not None else None for t in inputs])
    xp = np
    if dispatch.cuda_in_use:  # the one device check of every op (and the cupy switch)
        xp, arrays = op_module(op.name, arrays)
    try:
        out = op.forward(xp, *arrays, **attrs)
    except ValueError as error:
        if isinstance(error, ShapeError):
            raise
        raise ShapeError(_shape_message(op, arrays, error)) from error
    saved = None
    if op.stash:
        out, saved = out
    node = None
    if op.backward is not None and state.grad_enabled:
        needs = tuple([t is not None and t.requires_grad for t in inputs])
        if True in needs:
            node = Node(op, inputs, arrays, attrs, out, saved, needs)
    if op.n_outputs == 1:
        if type(out) is not np.ndarray:
            out = xp.asarray(out)
            if node is not None:
                node.out = out
        result = _wrap(out, node, 0)
        if node is not None and op.saves_output:
            node.versions += ((result._version, 0, ~0),)
        if tracer is not None or state.anomaly:
            _observe(op, inputs, attrs, (result,))
        return result
    out = tuple([o if type(o) is np.ndarray else xp.asarray(o) for o in out])
    if node is not None:
        node.out = out
    result = tuple([_wrap(o, node, i) for i, o in enumerate(out)])
    if node is not None and op.saves_output:
        node.versions += tuple([(t._version, 0, ~i) for i, t in enumerate(result)])
    if tracer is not None or state.anomaly:
        _observe(op, inputs, attrs, result)
    return result


def _observe(op, inputs, attrs, outputs):
    if state.anomaly:
        check_forward(op, inputs, attrs, outputs)
    if tracer is not None:
        tracer(op, inputs, attrs, outputs)


def _shape_message(op, arrays, error) -> str:
    shapes = [tuple(a.shape) for a in arrays if a is not None]
    if "broadcast" in str(error) and len(shapes) >= 2:
        a, b = shapes[-2], shapes[-1]
        for k in range(1, min(len(a), len(b)) + 1):
            if a[-k] != b[-k] and 1 not in (a[-k], b[-k]):
                return (f"{op.name}: the size of tensor a ({a[-k]}) must match the size of "
                        f"tensor b ({b[-k]}) at non-singleton dimension {max(len(a), len(b)) - k}"
                        f" (shapes {a} and {b})")
    listed = ", ".join(str(s) for s in shapes)
    return f"{op.name}: {error} (input shapes {listed})"


def _nonfinite(array) -> bool:
    return array.dtype.kind in "fc" and not bool(np.isfinite(array).all())  # cupy: one sync


def _has_nonfinite_attr(attrs) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for v in attrs.values())


def check_forward(op, inputs, attrs, outputs):
    """detect_anomaly: raise if this op produced NaN/Inf from finite inputs (a deliberate
    -inf fill value, as in attention masks, is not an anomaly)."""
    if not any(_nonfinite(o.array) for o in outputs):
        return
    if any(t is not None and _nonfinite(t.array) for t in inputs) or _has_nonfinite_attr(attrs):
        return
    raise RuntimeError(f"detect_anomaly: op '{op.name}' produced NaN/Inf in its forward output "
                       f"at {user_source()}")


_wrap = None


def bind_tensor_class(cls):
    """Tell `apply` how to wrap outputs (tensor.py calls this once; avoids an import cycle)."""
    global _wrap
    _wrap = cls._wrap
