"""Constant folding: a node whose inputs are all constants is evaluated once, with the edge
runtime's own kernels, and replaced by an initializer; `Shape` of a value whose shape is fully
known becomes a constant too (so shape arithmetic on static dims disappears).

Example:
    >>> import numpy as np
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", (2, 3))
    >>> w = g.add_initializer("w", np.ones((3, 2), np.float32))
    >>> wt = g.add_node("Transpose", [w], attrs={"perm": [1, 0]}).outputs[0]
    >>> back = g.add_node("Transpose", [wt], attrs={"perm": [1, 0]}).outputs[0]
    >>> y = g.add_node("MatMul", [x, back], ["y"]).outputs[0]
    >>> fold_constants(g, 17), [n.op_type for n in g.nodes]
    (2, ['MatMul'])
"""

from __future__ import annotations

import numpy as np

from modelkit.edge_runtime.kernels.registry import lookup
from modelkit.exporter.ir import Graph, Node

# A folded result may grow (Expand, Tile, ConstantOfShape): keep the node when its output
# would be much larger than its inputs, so the file does not balloon.
_MAX_GROWTH_BYTES = 4096


def fold_constants(graph: Graph, opset: int) -> int:
    """Replace constant-input nodes by initializers; returns how many nodes were folded."""
    folded = 0
    for node in list(graph.nodes):
        if any(v in graph.outputs for v in node.outputs if v is not None):
            continue
        results = _static_shape(node) if node.op_type == "Shape" else _evaluate(node, opset)
        if results is None:
            continue
        base = _folded_name(node)
        for out, array in zip(node.outputs, results):
            if out is not None:
                # np.array, not np.ascontiguousarray: that one makes a 0-d scalar 1-D
                # (a folded Gather index or shape dim must keep its rank)
                constant = graph.add_initializer(graph.unique_value_name(base or out.name +
                                                                         "_folded"),
                                                 np.array(array, order="C"))
                graph.replace_all_uses(out, constant)
        graph.remove_node(node)
        folded += 1
    return folded


def _folded_name(node: Node):
    """'fc.weight_transpose' for a node reading one weight (so a folded weight keeps its
    state_dict name in view), else None."""
    inputs = [v for v in node.inputs if v is not None]
    if len(inputs) == 1 and inputs[0].data is not None:
        return f"{inputs[0].name}_{node.op_type.lower()}"
    return None


def _static_shape(node: Node):
    shape = node.inputs[0].shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return (np.array(shape[start:end], np.int64),)


def _evaluate(node: Node, opset: int):
    if node.domain or not all(v is None or v.data is not None for v in node.inputs):
        return None
    entry = lookup("", node.op_type, opset)
    if entry is None:
        return None
    arrays = [None if v is None else v.data for v in node.inputs]
    attrs = dict(node.attrs)
    if entry.wants_n_outputs:
        attrs["n_outputs"] = len(node.outputs)
    try:
        results = entry.fn(np, *arrays, **attrs)
    except Exception:  # noqa: BLE001  (a kernel refusing its inputs: leave the node to the runtime)
        return None
    size_in = sum(a.nbytes for a in arrays if a is not None)
    if sum(np.asarray(r).nbytes for r in results) > 4 * size_in + _MAX_GROWTH_BYTES:
        return None
    return [np.asarray(r) for r in results]
