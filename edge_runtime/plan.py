"""The execution plan: everything `Session.run` needs, worked out once at load.

Every value of the graph gets a slot number. A run copies `initial_slots` (weights and folded
Constant nodes already in place), drops the feeds into their slots and walks `steps`: per node
the kernel with its attributes and array module bound, the slots of its inputs and outputs, and
the slots whose last reader it is, cleared right after it so intermediates die as early as
possible. Nothing is looked up by name and no attribute is parsed during a run.

Conv, Gemm, MaxPool and AveragePool nodes get prepared kernels (see `PREPARED_KERNELS`): weights
reshaped and window geometry worked out once, not per call. A shape chain (Shape -> Gather ->
Concat before a Reshape, as exporters write Flatten) runs as one step per consumed result that
caches it per input shape; the profiler shows that step under the chain's last node, with the
shapes of the tensors the chain measures as its inputs.

Runs of nodes that one kernel computes in fewer passes (the five-node Erf GELU, MatMul then its
bias Add: see `fusion.find_fusions`) run as one step when their intermediates are private; the
profiler shows that step under the run's last node, its op type the run's op types joined by
"+" ("MatMul+Add").

Elementwise nodes (Relu after a Conv, the residual Add of a ResNet block...) write into an input
that dies at that node when a kernel of ours made that array fresh: same result, one
intermediate buffer fewer to allocate and fault in. A Relu whose only reader is a MaxPool runs
after the pool instead (max and Relu commute), on a quarter of the data for a 2x2 pool; its own
step then passes its input through, so in profiles its time shows under the MaxPool.

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

import ctypes
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from modelkit.edge_runtime.errors import KernelError, ModelFormatError, UnsupportedOpError
from modelkit.edge_runtime.fusion import Fusion, find_fusions
from modelkit.edge_runtime.format.model import Model, Node
from modelkit.edge_runtime.graph_check import model_opset, node_label, op_id
from modelkit.edge_runtime.kernels import conv as conv_kernels
from modelkit.edge_runtime.kernels import matmul as matmul_kernels
from modelkit.edge_runtime.kernels import ml as ml_kernels
from modelkit.edge_runtime.kernels import pool as pool_kernels
from modelkit.edge_runtime.kernels import registry
from modelkit.edge_runtime.shape_cache import ShapeCache

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
    fusions: dict[int, Fusion] = field(default_factory=dict)
    """{step's node index: the fused run it executes}, for profiles and errors."""


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
    kernels, bindings, problems = _bind_kernels(model, xp)
    if problems:
        raise UnsupportedOpError("the model uses ops or attributes that have no kernel:\n  "
                                 + "\n  ".join(m for m, _ in problems),
                                 missing=sorted({op for _, op in problems}))
    chains, in_chains = _shape_chains(model, graph_outputs) if xp is np else ({}, set())
    fusions = _our_fusions(find_fusions(model, in_chains), bindings) if xp is np else {}
    absorbed = {j for f in fusions.values() for j in f.nodes[:-1]}
    reads = [chains[i][1] if i in chains else fusions[i].inputs if i in fusions
             else () if i in in_chains or i in absorbed else node.inputs
             for i, node in enumerate(model.nodes)]
    last_reader = _last_readers(reads)
    for i, (_, _, chain_constants) in chains.items():
        for name in chain_constants:  # gives them slots; constants are never cleared
            last_reader.setdefault(name, i)

    constants: dict[int, Any] = {slot_of[name]: xp.asarray(a) for name, a in model.initializers.items()}
    pending = []  # indices of the nodes each run executes (Constant nodes are folded here)
    for i, node in enumerate(model.nodes):
        for out in node.outputs:
            if out and (out in graph_outputs or out in last_reader):
                slot_of[out] = len(slot_of) + 2
        if _is_constant(node):
            constants.update(_fold_constant(node, i, kernels[i], slot_of))
        elif i in chains or (i not in in_chains and i not in absorbed):
            pending.append(i)

    if xp is np:
        tune_allocator()
    producer = {out: model.nodes[i].op_type for i in pending for out in model.nodes[i].outputs
                if model.nodes[i].domain in registry.ONNX_DOMAINS and i not in chains}
    relu_then_pool = _relus_before_max_pools(model, pending, graph_outputs) if xp is np else {}
    steps = []
    for i in pending:
        node = model.nodes[i]
        ins = tuple(slot_of[n] if n else NONE_SLOT for n in reads[i])
        outs = tuple(slot_of.get(n, DISCARD_SLOT) if n else DISCARD_SLOT for n in node.outputs)
        dying = [n for n in reads[i] if n and last_reader.get(n) == i
                 and n not in graph_outputs and slot_of[n] not in constants]
        dead = {slot_of[n] for n in dying}
        if DISCARD_SLOT in outs:
            dead.add(DISCARD_SLOT)
        if i in chains:
            steps.append((_cached_chain(model, chains[i], kernels, constants, slot_of), ins,
                          outs, len(outs), tuple(sorted(dead)), i))
            continue
        if i in fusions:
            steps.append((fusions[i].make_kernel(xp, kernels), ins, outs, len(outs),
                          tuple(sorted(dead)), i))
            continue
        try:
            prepared = _prepared_kernel(xp, bindings[i], [constants.get(s) for s in ins])
        except KernelError as e:  # attributes no run could use: the file is wrong, say so now
            raise ModelFormatError(f"node {node_label(model.nodes[i], i)}: {e}") from None
        kernel = prepared or kernels[i]
        if i in relu_then_pool:
            kernel = _pass_through
        elif i in relu_then_pool.values():
            kernel = _then_relu(kernel)
        elif xp is np:
            reusable = [j for j, n in enumerate(node.inputs) if n in dying
                        and producer.get(n) in FRESH_OUTPUT_OPS]
            kernel = _in_place_kernel(node, reusable, kernel) or kernel
        steps.append((kernel, ins, outs, len(outs), tuple(sorted(dead)), i))

    initial = [None] * (len(slot_of) + 2)
    for s, value in constants.items():
        initial[s] = value
    return Plan(steps=tuple(steps), initial_slots=tuple(initial), slot_of=slot_of,
                constant_slots=frozenset(constants), nodes=tuple(model.nodes),
                labels=tuple(node_label(n, i) for i, n in enumerate(model.nodes)),
                fusions=fusions)


def _our_fusions(fusions: dict[int, Fusion], bindings: list) -> dict[int, Fusion]:
    """The fusions none of whose nodes has a kernel registered in place of ours: a fused
    step computes with our kernels, so it must not bypass a user's."""
    return {i: f for i, f in fusions.items()
            if all(bindings[j] is not None and bindings[j][0].__module__.startswith(_OUR_KERNELS)
                   for j in f.nodes)}


_OUR_KERNELS = "modelkit.edge_runtime.kernels."


FRESH_OUTPUT_OPS = frozenset({
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "BatchNormalization",
    "LayerNormalization", "Softmax", "Erf", "Sigmoid", "Tanh", "MaxPool", "AveragePool"})
"""Ops whose numpy kernels return a new array that nothing else refers to (never a view of an
input or a weight), so a later node may overwrite it once it is dead."""

_IN_PLACE_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _in_place_kernel(node: Node, reusable: list[int], kernel: Callable) -> Callable | None:
    """A kernel writing `node`'s result into its input number reusable[0], or None.

    Only float arrays are overwritten; binary ops also check per call that the dying input
    already has the result's shape and dtype (no broadcasting into it). Anything else runs
    the node's own `kernel` (integer Div, for one, truncates).
    """
    if not reusable or len(node.outputs) != 1 or node.domain not in registry.ONNX_DOMAINS:
        return None
    if node.op_type == "Relu" and len(node.inputs) == 1:
        return _relu_in_place
    ufunc = _IN_PLACE_BINARY.get(node.op_type)
    if ufunc is None or len(node.inputs) != 2:
        return None
    target = reusable[0]

    def binary_in_place(a, b):
        into, other = (a, b) if target == 0 else (b, a)
        if (type(into) is np.ndarray and into.dtype == other.dtype and into.dtype.kind == "f"
                and _broadcasts_into(other.shape, into.shape)):
            return (ufunc(a, b, out=into),)
        return kernel(a, b)
    return binary_in_place


def _relus_before_max_pools(model: Model, pending: list[int], graph_outputs: set) -> dict[int, int]:
    """{Relu node index: the MaxPool (without indices) that is its output's only reader}."""
    readers: dict[str, list[int]] = {}
    for i in pending:
        for name in model.nodes[i].inputs:
            if name:
                readers.setdefault(name, []).append(i)
    pairs = {}
    for i in pending:
        node = model.nodes[i]
        if (not _is_onnx(node, "Relu") or len(node.outputs) != 1
                or node.outputs[0] in graph_outputs):
            continue
        (reader, *others) = readers.get(node.outputs[0], [None])
        if reader is not None and not others:
            pool = model.nodes[reader]
            if _is_onnx(pool, "MaxPool") and len(pool.outputs) == 1 and len(pool.inputs) == 1:
                pairs[i] = reader
    return pairs


def _is_onnx(node: Node, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in registry.ONNX_DOMAINS


def _pass_through(x):
    return (x,)


def _then_relu(kernel: Callable) -> Callable:
    def kernel_then_relu(*inputs):
        (y,) = kernel(*inputs)
        return _relu_in_place(y)
    return kernel_then_relu


def _relu_in_place(x):
    if type(x) is not np.ndarray or x.dtype.kind != "f":  # numpy gives 0-d results as scalars
        return (np.maximum(x, 0),)  # what the Relu kernel computes
    if x.size < _ROW or not x.flags.c_contiguous:
        zero = _ZEROS.get(x.dtype)
        if zero is None:
            zero = _ZEROS[x.dtype] = np.zeros((), x.dtype)
        return (np.maximum(x, zero, out=x),)
    zeros = _ZERO_ROWS.get(x.dtype)
    if zeros is None:
        zeros = _ZERO_ROWS[x.dtype] = np.zeros(_ROW, x.dtype)
    # NOTE: numpy's maximum against a broadcast scalar runs without SIMD (61 us for 200k
    # float32) but against a contiguous row with SIMD (18 us): compare rows of the flat data
    # with a row of zeros
    flat = x.reshape(-1)
    whole = flat.size - flat.size % _ROW
    rows = flat[:whole].reshape(-1, _ROW)
    np.maximum(rows, zeros, out=rows)
    tail = flat[whole:]
    np.maximum(tail, zeros[:tail.size], out=tail)
    return (x,)


_ROW = 4096
_ZERO_ROWS: dict = {}  # per float dtype
_ZEROS: dict = {}  # 0-d, per float dtype: a Python 0 costs 0.3 us of conversion per call


def _broadcasts_into(shape: tuple, target: tuple) -> bool:
    if len(shape) > len(target):
        return False
    return all(s == t or s == 1 for s, t in zip(shape[::-1], target[::-1]))


@functools.cache
def tune_allocator() -> None:
    """Keep freed arrays in glibc's heap for reuse instead of returning them to the OS.

    NOTE: by default glibc serves every block above 128 KiB-32 MiB (a sliding threshold) with a
    fresh mmap and unmaps it on free, so each multi-MB intermediate of every run is page-faulted
    in again: about 1 ms per 4 MiB here, more than the Conv that fills it. Raising the mmap
    and trim thresholds makes them ordinary heap blocks that the next run reuses. This is
    process-wide (like onnxruntime's own arena), done once, and a no-op off glibc.

    Example:
        >>> tune_allocator()  # idempotent; `build_plan` calls it for numpy sessions
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, 512 << 20)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum on 64-bit
    except (OSError, AttributeError):
        pass


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def run_steps(plan: Plan, slots: list) -> None:
    """Execute every step on `slots` in place; a failing kernel raises `KernelError`.

    Example: see the module docstring.
    """
    step = None
    read = slots.__getitem__
    try:
        # NOTE: written for speed, ~0.3 us per node (map instead of a list comprehension, one
        # output stored without zip: 40% less loop time than the plain version)
        for step in plan.steps:
            fn, ins, outs, n_out, dead, _ = step
            results = fn(*map(read, ins))
            if type(results) is not tuple or len(results) < n_out:
                raise TypeError(f"the kernel returned {_describe_result(results)}, expected a"
                                f" tuple of {n_out} array(s)")
            if n_out == 1:
                slots[outs[0]] = results[0]
            else:
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
    fusion = plan.fusions.get(i)
    names = fusion.inputs if fusion else node.inputs
    described = ", ".join(f"{name or '(omitted)'}: {_describe_value(slots[s])}"
                          for name, s in zip(names, ins))
    where = f"\n  source: {node.source}" if node.source else ""
    return KernelError(f"node {plan.labels[i]} failed: {type(error).__name__}: {error}\n"
                       f"  inputs: {described or '(none)'}{where}")


def _last_readers(reads: list) -> dict[str, int]:
    """{value name: index of the last node reading it}, from each node's list of inputs."""
    last = {}
    for i, names in enumerate(reads):
        for name in names:
            if name:
                last[name] = i
    return last


SHAPE_SOURCES = frozenset({"Shape", "Size"})
SHAPE_ARITHMETIC = frozenset({
    "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast", "Identity", "Reshape", "Add",
    "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Floor", "Ceil", "Equal", "Where",
    "ReduceProd"})
"""Ops that a shape chain is made of: Shape/Size of a tensor, then small arithmetic on the
result and constants (the Shape -> Gather -> Concat that exporters emit before a Reshape).
Ops whose output may be large (ConstantOfShape, Expand, Range, Tile) are left out."""


def _shape_chains(model: Model, graph_outputs: set) -> tuple[dict[int, tuple], set[int]]:
    """{node index: (the chain nodes its outputs need, in order; the roots; the constants they
    read)} for every node of a shape chain whose output a node outside the chain reads, and
    the indices of every chain node.

    A chain's result depends only on the shapes of its roots (the tensors Shape/Size read), so
    its last node runs as one step that caches its outputs per root shapes; the nodes before
    it get no step of their own, nor do chain nodes whose outputs nothing reads.
    """
    constant_names = set(model.initializers) | {
        out for node in model.nodes if _is_constant(node) for out in node.outputs}
    roots_of: dict[str, frozenset] = {}
    node_roots: dict[int, frozenset] = {}
    producer: dict[str, int] = {}
    for i, node in enumerate(model.nodes):
        inputs = [n for n in node.inputs if n]
        if (node.domain not in registry.ONNX_DOMAINS or not node.outputs
                or any(out in graph_outputs for out in node.outputs)):
            continue
        if node.op_type in SHAPE_SOURCES and len(inputs) == 1:
            roots = roots_of.get(inputs[0], frozenset(inputs))
        elif (node.op_type in SHAPE_ARITHMETIC and any(n in roots_of for n in inputs)
              and all(n in roots_of or n in constant_names for n in inputs)):
            roots = frozenset().union(*(roots_of[n] for n in inputs if n in roots_of))
        else:
            continue
        node_roots[i] = roots
        for out in node.outputs:
            if out:
                roots_of[out], producer[out] = roots, i
    read_outside = {n for node in model.nodes if not all(out in producer for out in node.outputs if out)
                    for n in node.inputs if n in producer}
    chains = {}
    for i in sorted({producer[n] for n in read_outside}):
        needed, todo = set(), [i]
        while todo:
            j = todo.pop()
            if j not in needed:
                needed.add(j)
                todo.extend(producer[n] for n in model.nodes[j].inputs if n in producer)
        chains[i] = (tuple(sorted(needed)), tuple(sorted(node_roots[i])),
                     tuple(sorted({n for j in needed for n in model.nodes[j].inputs
                                   if n in constant_names})))
    return chains, set(node_roots)


def _cached_chain(model: Model, chain: tuple, kernels: list, constants: dict, slot_of: dict):
    """The step kernel of a shape chain's last node: takes the roots, returns the node's
    outputs, computed once per root shapes and kept read-only (every run shares them)."""
    needed, roots, constant_inputs = chain
    values = {name: constants[slot_of[name]] for name in constant_inputs}
    wanted = model.nodes[needed[-1]].outputs
    cache = ShapeCache()

    def run_chain(root_values):
        known = dict(values, **dict(zip(roots, root_values)))
        for j in needed:
            node = model.nodes[j]
            known.update(zip(node.outputs, kernels[j](*[known[n] if n else None
                                                        for n in node.inputs])))
        return tuple(_read_only(known[n]) if n else None for n in wanted)

    def shape_chain(*root_values):
        return cache.computed(tuple(v.shape for v in root_values),
                              lambda: run_chain(root_values))
    return shape_chain


def _read_only(value):
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def _bind_kernels(model: Model, xp) -> tuple[list[Callable], list, list[tuple[str, str]]]:
    """Per node its kernel with `xp` and attributes bound, and (kernel function, attributes);
    problems as (message, op id) pairs."""
    kernels, bindings, problems = [], [], []
    for i, node in enumerate(model.nodes):
        entry = registry.lookup(node.domain, node.op_type, model_opset(model, node.domain) or 0)
        if entry is None:
            problems.append((f"node {node_label(node, i)}: unsupported op {op_id(node)}", op_id(node)))
            kernels.append(None)
            bindings.append(None)
            continue
        attrs = dict(node.attrs)
        if entry.wants_n_outputs:
            attrs["n_outputs"] = len(node.outputs)
        rejected = _rejected_attributes(entry.fn, attrs)
        if rejected:
            problems.append((f"node {node_label(node, i)}: its kernel does not take attribute(s)"
                             f" {rejected}", op_id(node)))
        kernels.append(functools.partial(entry.fn, xp, **attrs))
        bindings.append((entry.fn, attrs))
    return kernels, bindings, problems


PREPARED_KERNELS: dict[Callable, Callable] = {
    conv_kernels.conv: conv_kernels.prepare_conv,
    pool_kernels.max_pool: pool_kernels.prepare_max_pool,
    pool_kernels.average_pool: pool_kernels.prepare_average_pool,
    matmul_kernels.gemm: matmul_kernels.prepare_gemm,
    ml_kernels.label_encoder: ml_kernels.prepare_label_encoder,
}
"""Kernel function -> `prepare(xp, attrs, constant_inputs)`: a kernel for one node that does
its per-shape and per-weight work once (the node's inputs that are load-time constants are
passed, None for the others), or None where the generic kernel is as good. Keyed by function,
so a kernel registered in place of ours is never bypassed."""


def _prepared_kernel(xp, binding, constant_inputs: list) -> Callable | None:
    if binding is None or binding[0] not in PREPARED_KERNELS:
        return None
    fn, attrs = binding
    return PREPARED_KERNELS[fn](xp, attrs, constant_inputs)


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
