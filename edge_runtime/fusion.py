"""Load-time pattern fusion: runs of nodes that one kernel computes in fewer passes.

`find_fusions` looks at a `Model`'s node list before the plan builds its steps and returns, per
fused run, the index of its last node, the nodes it absorbs, the values it reads and how to
build its kernel. A run fuses only when every intermediate it swallows has no other reader and
is not a graph output, so no value anyone can see disappears. Patterns:

- Erf GELU, x * 0.5 * (1 + erf(x / sqrt 2)), in the orders exporters write it (modelkit:
  Mul(x, 1/sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5; torch.onnx: Div(x, sqrt 2) -> ... ;
  also 0.5 * x computed on its own) -> the `Gelu` kernel: 5 passes over the data become ~3.
- MatMul by a constant 2-D weight, then Add of a constant bias over its last dim -> MatMul and
  the bias added into its fresh result in place, one step.

Example:
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> w, b = np.ones((2, 3), np.float32), np.zeros(3, np.float32)
    >>> m = Model(inputs=[ValueInfo("x", "float32", (1, 2))], outputs=[ValueInfo("y", "float32", (1, 3))],
    ...           nodes=[Node("MatMul", ["x", "w"], ["t"]), Node("Add", ["t", "b"], ["y"])],
    ...           initializers={"w": w, "b": b})
    >>> {last: (f.nodes, f.inputs, f.op_types) for last, f in find_fusions(m, set()).items()}
    {1: ((0, 1), ('x', 'w', 'b'), 'MatMul+Add')}
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

from modelkit.edge_runtime.format.model import Model, Node
from modelkit.edge_runtime.kernels import elementwise as elementwise_kernels
from modelkit.edge_runtime.kernels import registry
from modelkit.edge_runtime.kernels import shape as shape_kernels


class Fusion(NamedTuple):
    """One fused run: `nodes` in graph order (the last one's outputs are the run's outputs),
    the value names the step reads, and `make_kernel(xp, kernels)` building the step's kernel
    from the plan's bound per-node kernels."""

    nodes: tuple[int, ...]
    inputs: tuple[str, ...]
    op_types: str
    make_kernel: Callable


def find_fusions(model: Model, excluded: set[int]) -> dict[int, Fusion]:
    """{index of a fused run's last node: its `Fusion`}; runs never share nodes and never use
    a node in `excluded` (the plan's shape-chain nodes).

    Example: see the module docstring.
    """
    graph_outputs = {v.name for v in model.outputs}
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(model.nodes):
        for name in node.inputs:
            if name:
                readers.setdefault(name, []).append(i)
    producer = {out: i for i, node in enumerate(model.nodes) for out in node.outputs if out}
    graph = _Graph(model, readers, producer, graph_outputs, _constant_values(model), excluded)
    fusions: dict[int, Fusion] = {}
    taken: set[int] = set()
    for i in range(len(model.nodes)):
        for match in (_gelu, _matmul_bias):
            fusion = match(graph, i)
            if fusion is not None and not taken.intersection(fusion.nodes):
                taken.update(fusion.nodes)
                fusions[fusion.nodes[-1]] = fusion
                break
    return fusions


class _Graph(NamedTuple):
    model: Model
    readers: dict
    producer: dict
    graph_outputs: set
    constants: dict
    excluded: set

    def node(self, i: int, op_type: str) -> Node | None:
        """Node i if it is an ONNX `op_type` with one output and not excluded."""
        node = self.model.nodes[i]
        if (node.op_type == op_type and node.domain in registry.ONNX_DOMAINS
                and len(node.outputs) == 1 and i not in self.excluded):
            return node
        return None

    def only_reader(self, i: int, op_type: str) -> tuple[int, Node] | tuple[None, None]:
        """The single `op_type` node reading node i's output, if that output is private."""
        out = self.model.nodes[i].outputs[0]
        found = self.readers.get(out, [])
        if out in self.graph_outputs or len(found) != 1:
            return None, None
        node = self.node(found[0], op_type)
        return (found[0], node) if node is not None else (None, None)

    def produced_by(self, name: str, op_type: str) -> tuple[int, Node] | tuple[None, None]:
        i = self.producer.get(name)
        if i is None:
            return None, None
        node = self.node(i, op_type)
        return (i, node) if node is not None else (None, None)

    def scalar(self, name: str, value: float) -> bool:
        """Whether `name` is a float constant holding one element close to `value`."""
        c = self.constants.get(name)
        return (c is not None and c.size == 1 and c.dtype.kind == "f"
                and math.isclose(float(c.reshape(-1)[0]), value, rel_tol=1e-6))


def _other(node: Node, name: str) -> str | None:
    """The input of binary `node` that is not `name` (None unless it reads `name` once)."""
    if len(node.inputs) != 2 or node.inputs.count(name) != 1:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def _gelu(graph: _Graph, erf_i: int) -> Fusion | None:
    erf = graph.node(erf_i, "Erf")
    if erf is None:
        return None
    scale_i, scale = graph.produced_by(erf.inputs[0], "Div")
    if scale is not None:
        x = scale.inputs[0] if graph.scalar(scale.inputs[1], math.sqrt(2)) else None
    else:
        scale_i, scale = graph.produced_by(erf.inputs[0], "Mul")
        x = None
        if scale is not None and len(scale.inputs) == 2:
            x = next((a for a, b in (scale.inputs, scale.inputs[::-1])
                      if graph.scalar(b, math.sqrt(0.5))), None)
    if x is None or graph.only_reader(scale_i, "Erf")[0] != erf_i:
        return None
    add_i, add = graph.only_reader(erf_i, "Add")
    if add is None or not graph.scalar(_other(add, erf.outputs[0]), 1.0):
        return None
    mul_i, mul = graph.only_reader(add_i, "Mul")
    if mul is None:
        return None
    other = _other(mul, add.outputs[0])
    if other == x or graph.scalar(other, 0.5):
        last_i, last = graph.only_reader(mul_i, "Mul")
        wanted = (lambda name: graph.scalar(name, 0.5)) if other == x else (lambda name: name == x)
        if last is None or not wanted(_other(last, mul.outputs[0])):
            return None
        nodes = (scale_i, erf_i, add_i, mul_i, last_i)
    else:
        half_i, half = graph.produced_by(other, "Mul")
        if (half is None or not graph.scalar(_other(half, x), 0.5)
                or graph.only_reader(half_i, "Mul")[0] != mul_i):
            return None
        nodes = (scale_i, erf_i, add_i, half_i, mul_i)
    nodes = tuple(sorted(nodes))
    return Fusion(nodes, (x,), _op_types(graph.model, nodes), _gelu_kernel)


def _gelu_kernel(xp, kernels):
    gelu = elementwise_kernels.gelu

    def fused_gelu(x):
        return gelu(xp, x)
    return fused_gelu


def _matmul_bias(graph: _Graph, matmul_i: int) -> Fusion | None:
    matmul = graph.node(matmul_i, "MatMul")
    if matmul is None or len(matmul.inputs) != 2:
        return None
    weight = graph.constants.get(matmul.inputs[1])
    add_i, add = graph.only_reader(matmul_i, "Add")
    if weight is None or weight.ndim != 2 or weight.dtype.kind != "f" or add is None:
        return None
    bias_name = _other(add, matmul.outputs[0])
    bias = graph.constants.get(bias_name)
    # the bias must broadcast into the product without growing it: its last dim is N or 1 and
    # every other dim 1; its rank is checked per call
    if (bias is None or bias.dtype != weight.dtype or bias.ndim == 0
            or bias.shape[-1] not in (1, weight.shape[1]) or any(d != 1 for d in bias.shape[:-1])):
        return None
    nodes = (matmul_i, add_i)
    return Fusion(nodes, (matmul.inputs[0], matmul.inputs[1], bias_name),
                  _op_types(graph.model, nodes), functools.partial(_matmul_bias_kernel, matmul_i))


def _matmul_bias_kernel(matmul_i: int, xp, kernels: list) -> Callable:
    matmul = kernels[matmul_i]

    def matmul_add_bias(a, w, bias):
        (y,) = matmul(a, w)
        if y.ndim >= bias.ndim and y.dtype == bias.dtype:
            y += bias  # y is the product's fresh array: no second output buffer
            return (y,)
        return (y + bias,)
    return matmul_add_bias


def _op_types(model: Model, nodes: tuple[int, ...]) -> str:
    return "+".join(model.nodes[i].op_type for i in nodes)


def _constant_values(model: Model) -> dict[str, np.ndarray]:
    """Initializers and the values of Constant nodes, by name."""
    values = {name: np.asarray(a) for name, a in model.initializers.items()}
    for node in model.nodes:
        if (node.op_type == "Constant" and node.domain in registry.ONNX_DOMAINS
                and not node.inputs and len(node.outputs) == 1):
            try:
                (value,) = shape_kernels.constant(np, **node.attrs)
            except Exception:  # the plan reports an unusable Constant node itself
                continue
            values[node.outputs[0]] = np.asarray(value)
    return values
