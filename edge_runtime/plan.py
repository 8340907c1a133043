"""The execution plan: everything `Session.run` needs, worked out once at load.

Every value of the graph gets a slot number. A run copies `initial_slots` (weights and folded
Constant nodes already in place), drops the feeds into their slots and walks `steps`: per node
the kernel with its attributes and array module bound, the slots of its inputs and outputs, and
the slots whose last reader it is, cleared right after it so intermediates die as early as
possible. Nothing is looked up by name and no attribute is parsed during a run.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))], outputs=[ValueInfo("y", "float32", (2,))],
    ...           nodes=[Node("Neg", ["x"], ["t"]), Node("Relu", ["t"], ["y"])])
    >>> plan = build_plan(m, np)
    >>> slots = list(plan.initial_slots)
    >>> slots[plan.slot_of["x"]] = np.array([1.0, -2.0], np.float32)
    >>> run_steps(plan, slots)
    >>> slots[plan.slot_of["y"]], slots[plan.slot_of["t"]]
    (array([0., 2.], dtype=float32), None)
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from modelkit.edge_runtime.errors import KernelError, ModelFormatError, UnsupportedOpError
from modelkit.edge_runtime.format.model import Model, Node
from modelkit.edge_runtime.graph_check import model_opset, node_label, op_id
from modelkit.edge_runtime.kernels import registry

NONE_SLOT = 0
"""Always None: what an omitted optional input ("") reads."""
DISCARD_SLOT = 1
"""Where outputs nobody reads are written, cleared right after their node."""

Step = tuple  # (kernel, input slots, output slots, output count, slots to clear, node index)


@dataclass(frozen=True)
class Plan:
    """An executable graph. `steps` holds plain tuples (see `Step`) because the run loop unpacks
    them per node; `nodes[i]` and `labels[i]` describe step i for profiles and errors."""

    steps: tuple[Step, ...]
    initial_slots: tuple
    slot_of: dict[str, int]
    constant_slots: frozenset[int]
    nodes: tuple[Node, ...]
    labels: tuple[str, ...]


def build_plan(model: Model, xp) -> Plan:
    """Bind kernels, number the values, place the weights and compute last uses.

    The graph must already have passed `graph_check.structural_problems`. Raises
    `UnsupportedOpError` listing every node whose op or attributes its kernel does not support,
    and `ModelFormatError` when a Constant node cannot be evaluated.

    Example:
        >>> from modelkit.edge_runtime.format.model import ValueInfo
        >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
        ...           outputs=[ValueInfo("y", "float32", (2,))], nodes=[Node("Relu", ["x"], ["y"])])
        >>> len(build_plan(m, np).steps)
        1
    """
    slot_of: dict[str, int] = {}
    for name in [*model.initializers, *(v.name for v in model.inputs)]:
        slot_of.setdefault(name, len(slot_of) + 2)
    graph_outputs = {v.name for v in model.outputs}
    last_reader = _last_readers(model.nodes)

    kernels, problems = _bind_kernels(model, xp)
    if problems:
        raise UnsupportedOpError("the model uses ops or attributes that have no kernel:\n  "
                                 + "\n  ".join(m for m, _ in problems),
                                 missing=sorted({op for _, op in problems}))

    constants: dict[int, Any] = {slot_of[name]: xp.asarray(a) for name, a in model.initializers.items()}
    pending = []  # indices of the nodes each run executes (Constant nodes are folded here)
    for i, node in enumerate(model.nodes):
        for out in node.outputs:
            if out and (out in graph_outputs or out in last_reader):
                slot_of[out] = len(slot_of) + 2
        if _is_constant(node):
            constants.update(_fold_constant(node, i, kernels[i], slot_of))
        else:
            pending.append(i)

    steps = []
    for i in pending:
        node = model.nodes[i]
        ins = tuple(slot_of[n] if n else NONE_SLOT for n in node.inputs)
        outs = tuple(slot_of.get(n, DISCARD_SLOT) if n else DISCARD_SLOT for n in node.outputs)
        dead = {slot_of[n] for n in node.inputs if n and last_reader.get(n) == i
                and n not in graph_outputs and slot_of[n] not in constants}
        if DISCARD_SLOT in outs:
            dead.add(DISCARD_SLOT)
        steps.append((kernels[i], ins, outs, len(outs), tuple(sorted(dead)), i))

    initial = [None] * (len(slot_of) + 2)
    for s, value in constants.items():
        initial[s] = value
    return Plan(steps=tuple(steps), initial_slots=tuple(initial), slot_of=slot_of,
                constant_slots=frozenset(constants), nodes=tuple(model.nodes),
                labels=tuple(node_label(n, i) for i, n in enumerate(model.nodes)))


def run_steps(plan: Plan, slots: list) -> None:
    """Execute every step on `slots` in place; a failing kernel raises `KernelError`.

    Example: see the module docstring.
    """
    step = None
    try:
        for step in plan.steps:
            fn, ins, outs, n_out, dead, _ = step
            results = fn(*[slots[s] for s in ins])
            if type(results) is not tuple or len(results) < n_out:
                raise TypeError(f"the kernel returned {_describe_result(results)}, expected a"
                                f" tuple of {n_out} array(s)")
            for s, r in zip(outs, results):
                slots[s] = r
            for s in dead:
                slots[s] = None
    except Exception as e:
        raise kernel_error(plan, step, slots, e) from e


def kernel_error(plan: Plan, step: Step, slots: list, error: Exception) -> KernelError:
    """The `KernelError` for `error` raised while running `step`: node, op, input shapes/dtypes.

    Example:
        >>> from modelkit.edge_runtime.format.model import ValueInfo
        >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
        ...           outputs=[ValueInfo("y", "float32", (2,))], nodes=[Node("Relu", ["x"], ["y"], name="r")])
        >>> p = build_plan(m, np)
        >>> str(kernel_error(p, p.steps[0], [None] * 4, ValueError("boom")))
        "node 'r' (Relu) failed: ValueError: boom\\n  inputs: x: None"
    """
    _, ins, _, _, _, i = step
    node = plan.nodes[i]
    described = ", ".join(f"{name or '(omitted)'}: {_describe_value(slots[s])}"
                          for name, s in zip(node.inputs, ins))
    where = f"\n  source: {node.source}" if node.source else ""
    return KernelError(f"node {plan.labels[i]} failed: {type(error).__name__}: {error}\n"
                       f"  inputs: {described or '(none)'}{where}")


def _last_readers(nodes: list[Node]) -> dict[str, int]:
    last = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            if name:
                last[name] = i
    return last


def _bind_kernels(model: Model, xp) -> tuple[list[Callable], list[tuple[str, str]]]:
    """Per node its kernel with `xp` and attributes bound; problems as (message, op id) pairs."""
    kernels, problems = [], []
    for i, node in enumerate(model.nodes):
        entry = registry.lookup(node.domain, node.op_type, model_opset(model, node.domain) or 0)
        if entry is None:
            problems.append((f"node {node_label(node, i)}: unsupported op {op_id(node)}", op_id(node)))
            kernels.append(None)
            continue
        attrs = dict(node.attrs)
        if entry.wants_n_outputs:
            attrs["n_outputs"] = len(node.outputs)
        rejected = _rejected_attributes(entry.fn, attrs)
        if rejected:
            problems.append((f"node {node_label(node, i)}: its kernel does not take attribute(s)"
                             f" {rejected}", op_id(node)))
        kernels.append(functools.partial(entry.fn, xp, **attrs))
    return kernels, problems


def _rejected_attributes(fn: Callable, attrs: dict) -> list[str]:
    parameters = _parameters(fn)
    if parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return []
    return sorted(a for a in attrs if a not in parameters
                  or parameters[a].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                            inspect.Parameter.VAR_POSITIONAL))


@functools.lru_cache(maxsize=None)
def _parameters(fn: Callable):
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return None


def _is_constant(node: Node) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx") and not node.inputs


def _fold_constant(node: Node, i: int, kernel: Callable, slot_of: dict[str, int]) -> dict[int, Any]:
    """Evaluate a Constant node once at load; its value is read-only since every run shares it."""
    try:
        (value,) = kernel()[:1]
    except Exception as e:
        raise ModelFormatError(f"node {node_label(node, i)}: cannot build its value:"
                               f" {type(e).__name__}: {e}") from e
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    out = node.outputs[0] if node.outputs else ""
    return {slot_of[out]: value} if out in slot_of else {}


def _describe_value(value) -> str:
    if value is None:
        return "None"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return type(value).__name__
    return f"{dtype}[{', '.join(map(str, shape))}]"


def _describe_result(results) -> str:
    if type(results) is tuple:
        return f"a tuple of {len(results)}"
    return f"a {type(results).__name__}"
