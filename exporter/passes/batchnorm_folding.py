"""Fold an inference BatchNormalization into the Conv or Linear (Gemm, MatMul + Add) before it:
y = scale * (W x + B - mean) / sqrt(var + eps) + bias is the same layer with
W' = W * s and B' = (B - mean) * s + bias per output channel, s = scale / sqrt(var + eps).

Example:
    >>> import numpy as np
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", (1, 1, 4, 4))
    >>> w = g.add_initializer("conv.weight", np.ones((2, 1, 3, 3), np.float32))
    >>> c = g.add_node("Conv", [x, w]).outputs[0]
    >>> stats = [g.add_initializer(n, np.full(2, v, np.float32)) for n, v in (
    ...     ("bn.weight", 2.0), ("bn.bias", 1.0), ("bn.running_mean", 0.5), ("bn.running_var", 4.0))]
    >>> y = g.add_node("BatchNormalization", [c, *stats], ["y"]).outputs[0]
    >>> y.dtype, y.shape = "float32", (1, 2, 2, 2); g.outputs.append(y)
    >>> fold_conv_batchnorm(g), [n.op_type for n in g.nodes]
    (1, ['Conv'])
    >>> round(float(g.value("conv.weight").data[0, 0, 0, 0]), 4)  # 2 / sqrt(4 + eps)
    1.0
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from modelkit.exporter.ir import Graph, Node, Value
from modelkit.exporter.passes.cleanup import take_output_place


def fold_conv_batchnorm(graph: Graph) -> int:
    """Fold BatchNormalization into a preceding Conv; returns how many were folded."""
    folded = 0
    for bn in _inference_batchnorms(graph):
        conv = _sole_producer(graph, bn, ("Conv",))
        if conv is None or not _constant(conv.inputs[1:]):
            continue
        weight, bias = conv.inputs[1], conv.inputs[2] if len(conv.inputs) > 2 else None
        scale, shift = _scale_shift(bn, bias, weight.data.shape[0])
        new_weight = weight.data * scale.reshape((-1,) + (1,) * (weight.data.ndim - 1))
        _rewrite(graph, conv, bn, {1: new_weight, 2: shift})
        folded += 1
    return folded


def fold_linear_batchnorm(graph: Graph) -> int:
    """Fold BatchNormalization over the features of a 2-D Gemm (or MatMul + Add) output."""
    folded = 0
    for bn in _inference_batchnorms(graph):
        linear = _sole_producer(graph, bn, ("Gemm", "Add"))
        if linear is None or len(bn.inputs[0].shape or ()) != 2:
            continue
        if linear.op_type == "Gemm":
            folded += _fold_gemm(graph, linear, bn)
        else:
            folded += _fold_matmul_add(graph, linear, bn)
    return folded


def _fold_gemm(graph: Graph, gemm: Node, bn: Node) -> int:
    attrs = gemm.attrs
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return 0
    if not _constant(gemm.inputs[1:]):
        return 0
    weight, bias = gemm.inputs[1], gemm.inputs[2] if len(gemm.inputs) > 2 else None
    if bias is not None and bias.data.ndim != 1:
        return 0
    trans_b = attrs.get("transB", 0)
    scale, shift = _scale_shift(bn, bias, weight.data.shape[0 if trans_b else 1])
    new_weight = weight.data * (scale[:, None] if trans_b else scale[None, :])
    _rewrite(graph, gemm, bn, {1: new_weight, 2: shift})
    return 1


def _fold_matmul_add(graph: Graph, add: Node, bn: Node) -> int:
    matmul = add.inputs[0].producer if add.inputs[0] is not None else None
    bias = add.inputs[1]
    if (matmul is None or matmul.op_type != "MatMul" or len(add.inputs[0].uses()) != 1
            or not _constant([bias, matmul.inputs[1]]) or bias.data.ndim != 1
            or matmul.inputs[1].data.ndim != 2 or add.inputs[0] in graph.outputs):
        return 0
    weight = matmul.inputs[1]
    scale, shift = _scale_shift(bn, bias, weight.data.shape[1])
    _rewrite(graph, matmul, None, {1: weight.data * scale[None, :]})
    _rewrite(graph, add, bn, {1: shift})
    return 1


def _inference_batchnorms(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op_type == "BatchNormalization" and not n.domain
            and not n.attrs.get("training_mode", 0) and _constant(n.inputs[1:5])
            and all(v is None or not v.uses() for v in n.outputs[1:])]


def _sole_producer(graph: Graph, bn: Node, op_types) -> Optional[Node]:
    x = bn.inputs[0]
    node = x.producer
    if node is None or node.op_type not in op_types or node.domain or len(x.uses()) != 1 \
            or x in graph.outputs:
        return None
    return node


def _constant(values) -> bool:
    return all(v is None or v.data is not None for v in values)


def _scale_shift(bn: Node, bias: Optional[Value], channels: int):
    """s and B' per channel, computed in float64 and returned in the weights' dtype."""
    gamma, beta, mean, var = (v.data.astype(np.float64) for v in bn.inputs[1:5])
    scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    b = bias.data.astype(np.float64) if bias is not None else np.zeros(channels)
    dtype = bn.inputs[1].data.dtype
    return scale.astype(dtype), ((b - mean) * scale + beta).astype(dtype)


def _rewrite(graph: Graph, node: Node, bn: Optional[Node], new_inputs: dict) -> None:
    """Give `node` the folded weights (in place of single-use initializers, else as new ones)
    and bypass `bn`, whose output name (if it is a graph output) passes to `node`."""
    replaced = []
    for index, array in new_inputs.items():
        old = node.inputs[index] if index < len(node.inputs) else None
        if old is not None and len(old.uses()) == 1 and old not in graph.outputs:
            old.data = array.astype(old.data.dtype)
            continue
        # a layer without bias gets one named like its weight ("conv1.weight" -> "conv1.bias")
        name = old.name + "_folded" if old is not None else \
            node.inputs[1].name.rsplit(".weight", 1)[0] + ".bias"
        replaced.append((index, array, name))
    for index, array, name in replaced:
        value = graph.add_initializer(graph.unique_value_name(name), array)
        if index < len(node.inputs):
            node.set_input(index, value)
        else:
            node.inputs = list(node.inputs) + [value]
    if bn is None:
        return
    out, x = bn.outputs[0], bn.inputs[0]
    is_output = out in graph.outputs
    graph.replace_all_uses(out, x)
    graph.remove_node(bn)
    if is_output:
        take_output_place(x, out)
