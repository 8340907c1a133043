"""Structural checks of a `Model` graph, all problems reported at once.

`graph_problems(model)` is what every loader calls before it trusts a graph: the edge runtime's
`Session`, the ONNX reader and the `.mkb` reader. It never raises; it returns one line per problem,
each naming the node (its name, or `#index op_type` when it has none), so a caller can put the
whole list into a single error.

Example:
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
    ...           outputs=[ValueInfo("y", "float32", (2,))],
    ...           nodes=[Node("Relu", ["z"], ["y"], name="r")])
    >>> graph_problems(m)
    ["node 'r' (Relu): input 'z' is not produced by any node, graph input or initializer"]
"""

from __future__ import annotations

import sys

from modelkit.edge_runtime.format.model import DTYPES, Model, Node
from modelkit.edge_runtime.kernels import registry

_ONNX_DOMAINS = ("", "ai.onnx")


def node_label(node: Node, index: int) -> str:
    """How messages name a node: `'name' (OpType)`, or `#index OpType` for an unnamed node.

    Example:
        >>> node_label(Node("Relu", ["x"], ["y"]), 3)
        '#3 Relu'
    """
    return f"'{node.name}' ({node.op_type})" if node.name else f"#{index} {node.op_type}"


def graph_problems(model: Model) -> list[str]:
    """Every structural problem and every op without a kernel, one message each.

    Example:
        >>> from modelkit.edge_runtime.format.model import ValueInfo
        >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
        ...           outputs=[ValueInfo("y", "float32", (2,))], nodes=[])
        >>> graph_problems(m)
        ["graph output 'y' is not produced by any node, graph input or initializer"]
    """
    return structural_problems(model) + [message for message, _ in unsupported_ops(model)]


def structural_problems(model: Model) -> list[str]:
    """Dangling edges, cycles, out-of-order nodes, values produced twice, outputs never produced
    and malformed input/output declarations.

    Example:
        >>> from modelkit.edge_runtime.format.model import ValueInfo
        >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
        ...           outputs=[ValueInfo("x", "float32", (2,))], nodes=[])
        >>> structural_problems(m)
        []
    """
    problems = _declaration_problems(model)
    producer = {}  # value name -> index of the node producing it; -1 for inputs and initializers
    for name in [v.name for v in model.inputs] + list(model.initializers):
        producer.setdefault(name, -1)
    for i, node in enumerate(model.nodes):
        for out in node.outputs:
            if not out:
                continue
            if out in producer:
                first = "a graph input or initializer" if producer[out] < 0 else (
                    "node " + node_label(model.nodes[producer[out]], producer[out]))
                problems.append(f"node {node_label(node, i)}: output '{out}' is already produced"
                                f" by {first}")
            else:
                producer[out] = i

    late_edges = []  # (consumer index, value, producer index) where the producer comes later
    for i, node in enumerate(model.nodes):
        for name in node.inputs:
            if not name:
                continue
            p = producer.get(name)
            if p is None:
                problems.append(f"node {node_label(node, i)}: input '{name}' is not produced by"
                                f" any node, graph input or initializer")
            elif p >= i:
                late_edges.append((i, name, p))
    problems += _ordering_problems(model.nodes, producer, late_edges)

    for out in model.outputs:
        if out.name not in producer:
            problems.append(f"graph output '{out.name}' is not produced by any node, graph input"
                            f" or initializer")
    return problems


def unsupported_ops(model: Model) -> list[tuple[str, str]]:
    """Nodes whose (domain, op type, model opset) has no registered kernel, as
    (message, "domain::OpType" or "OpType") pairs; kernels registered for custom domains count.

    Example:
        >>> from modelkit.edge_runtime.format.model import ValueInfo
        >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))],
        ...           outputs=[ValueInfo("y", "float32", (2,))],
        ...           nodes=[Node("NoSuchOp", ["x"], ["y"], domain="example.doc")])
        >>> unsupported_ops(m)[0][1]
        'example.doc::NoSuchOp'
    """
    missing = []
    for i, node in enumerate(model.nodes):
        opset = model_opset(model, node.domain)
        if opset is None:
            missing.append((f"node {node_label(node, i)}: the model declares no opset for domain"
                            f" '{node.domain}'", op_id(node)))
        elif registry.lookup(node.domain, node.op_type, opset) is None:
            at = f" at opset {opset}" if opset != sys.maxsize else ""
            missing.append((f"node {node_label(node, i)}: unsupported op {op_id(node)}{at}",
                            op_id(node)))
    return missing


def model_opset(model: Model, domain: str) -> int | None:
    """The opset the model declares for `domain`; for an undeclared custom domain, any version
    (the app registered the kernel for its own files), for undeclared ONNX, None.

    Example:
        >>> from modelkit.edge_runtime.format.model import ValueInfo
        >>> model_opset(Model(inputs=[], outputs=[], nodes=[], opsets={"": 13}), "ai.onnx")
        13
    """
    if domain in _ONNX_DOMAINS:
        return model.opsets.get("", model.opsets.get("ai.onnx"))
    return model.opsets.get(domain, sys.maxsize)


def op_id(node: Node) -> str:
    """`OpType` for the ONNX domain, `domain::OpType` otherwise.

    Example:
        >>> op_id(Node("Gelu", [], [], domain="com.microsoft"))
        'com.microsoft::Gelu'
    """
    return node.op_type if node.domain in _ONNX_DOMAINS else f"{node.domain}::{node.op_type}"


def _declaration_problems(model: Model) -> list[str]:
    problems = []
    seen = set()
    for kind, infos in (("input", model.inputs), ("output", model.outputs)):
        for info in infos:
            if kind == "input" and info.name in seen:
                problems.append(f"graph input '{info.name}' is declared twice")
            seen.add(info.name)
            if info.dtype not in DTYPES:
                problems.append(f"graph {kind} '{info.name}': unknown dtype {info.dtype!r}")
            bad_dims = [d for d in info.shape or () if not (
                isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= 0))]
            if bad_dims:
                problems.append(f"graph {kind} '{info.name}': invalid dims {bad_dims} in shape"
                                f" {info.shape} (expected non-negative ints or dim names)")
    return problems


def _ordering_problems(nodes: list[Node], producer: dict[str, int],
                       late_edges: list[tuple[int, str, int]]) -> list[str]:
    """Split edges whose producer comes at or after the consumer into cycles and mere misorder."""
    if not late_edges:
        return []
    cycles = _cycles(nodes, producer)
    in_cycle = {i for cycle in cycles for i in cycle}
    problems = []
    for cycle in cycles:
        path = " -> ".join(node_label(nodes[i], i) for i in cycle + cycle[:1])
        problems.append(f"cycle: {path}")
    for consumer, name, p in late_edges:
        if consumer in in_cycle and p in in_cycle:
            continue
        problems.append(f"node {node_label(nodes[consumer], consumer)}: input '{name}' is"
                        f" produced later by node {node_label(nodes[p], p)} (nodes are not in"
                        f" topological order)")
    return problems


def _cycles(nodes: list[Node], producer: dict[str, int]) -> list[list[int]]:
    """One representative cycle per strongly connected component (Tarjan, iterative)."""
    successors = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in node.inputs:
            p = producer.get(name, -1) if name else -1
            if p >= 0:
                successors[p].append(i)
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for root in range(len(nodes)):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if k < len(successors[v]):
                work.append((v, k + 1))
                w = successors[v][k]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1 or v in successors[v]:
                    components.append(sorted(component))
    return [_cycle_in(component, successors) for component in components]


def _cycle_in(component: list[int], successors: list[list[int]]) -> list[int]:
    """A simple cycle through the first node of a strongly connected component."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = next(w for w in successors[path[-1]] if w in members)
        if nxt == start or nxt in seen:
            return path[path.index(nxt):]
        path.append(nxt)
        seen.add(nxt)
