"""Post-training weight quantization of a `Graph`, stored the `.mkb` way (`Value.quantization`).

- "int8": symmetric, per output channel, for the weights of Conv, Gemm, MatMul, LSTM and GRU:
  `q = round(w / scale)` in [-127, 127] with `scale = max|w| / 127` per output channel,
  zero point 0. About 4x smaller weights.
- "fp16": float32 weights stored as float16 (scale 1.0). About 2x smaller.

The edge runtime expands them to float32 once when it loads the file
(`modelkit.edge_runtime.dequantize`), so kernels still compute in float32. An ONNX file cannot
carry these parameters: `to_onnx_nodes` rewrites them as DequantizeLinear / Cast nodes.

Example:
    >>> import numpy as np
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", (1, 4))
    >>> w = g.add_initializer("w", np.arange(8, dtype=np.float32).reshape(4, 2))
    >>> g.outputs.append(g.add_node("MatMul", [x, w], ["y"]).outputs[0])
    >>> quantize(g, "int8").tensors, w.dtype, w.quantization.axis
    (1, 'int8', 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelkit.converters.errors import ConversionError
from modelkit.edge_runtime.format.model import Quantization
from modelkit.exporter.ir import Graph, Value

MODES = ("int8", "fp16")
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Smaller tensors (biases) stay float32: in a .mkb file, where each array is 64-byte aligned,
# the scale and zero point that mark a float16 tensor would cost more than float16 saves.
FP16_MIN_ELEMENTS = 128


@dataclass
class QuantizationReport:
    """What `quantize` changed: how many weights, and their bytes before and after."""

    mode: str
    tensors: int
    bytes_before: int
    bytes_after: int


def quantize(graph: Graph, mode: str) -> QuantizationReport:
    """Quantize the weights of `graph` in place (see the module docstring for the modes).

    Example: see the module docstring.
    """
    if mode not in MODES:
        raise ConversionError(f"unknown quantization {mode!r}; expected one of {MODES}")
    chosen = _int8_weights(graph) if mode == "int8" else _fp16_weights(graph)
    report = QuantizationReport(mode, len(chosen), 0, 0)
    for value, axis in chosen.items():
        report.bytes_before += value.data.nbytes
        if mode == "int8":
            value.data, value.quantization = quantize_int8(value.data, axis)
        else:
            value.data = value.data.astype(np.float16)
            value.quantization = Quantization(np.array(1.0, np.float32), np.array(0.0, np.float16))
        value.dtype = value.data.dtype.name
        report.bytes_after += value.data.nbytes + value.quantization.scale.nbytes
    return report


def quantize_int8(weight: np.ndarray, axis: int) -> tuple[np.ndarray, Quantization]:
    """Symmetric int8 quantization of `weight` with one scale per index along `axis`.

    Example:
        >>> q, params = quantize_int8(np.array([[1.0, -0.5], [0.1, 0.2]], np.float32), 0)
        >>> q, params.scale * 127
        (array([[127, -64],
               [ 64, 127]], dtype=int8), array([1. , 0.2], dtype=float32))
    """
    axis = axis % weight.ndim
    others = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=others, keepdims=True) if others else np.abs(weight)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    channels = scale.reshape(-1)
    return q, Quantization(channels, np.zeros(channels.shape, np.int8), axis)


def to_onnx_nodes(graph: Graph) -> int:
    """Rewrite each quantized weight as a DequantizeLinear (int8) or Cast (float16) node feeding
    its users, so that the graph can be written as ONNX; returns how many were rewritten.

    Example:
        >>> g = Graph(); x = g.add_input("x", "float32", (1, 2))
        >>> w = g.add_initializer("w", np.ones((2, 2), np.float32))
        >>> g.outputs.append(g.add_node("MatMul", [x, w], ["y"]).outputs[0])
        >>> _ = quantize(g, "int8"); to_onnx_nodes(g), [n.op_type for n in g.nodes]
        (1, ['DequantizeLinear', 'MatMul'])
    """
    quantized = [v for v in graph.values.values() if v.quantization is not None and v.is_initializer]
    for value in quantized:
        q, real = value.quantization, graph.unique_value_name(value.name + "_dequantized")
        first_user = min(value.consumers(), key=graph.nodes.index)
        value.quantization = None
        if value.data.dtype == np.float16:
            node = graph.add_node("Cast", [value], [real], {"to": 1}, before=first_user)
        else:
            scale = graph.add_initializer(graph.unique_value_name(value.name + "_scale"), q.scale)
            zero = graph.add_initializer(graph.unique_value_name(value.name + "_zero_point"),
                                         q.zero_point)
            node = graph.add_node("DequantizeLinear", [value, scale, zero], [real],
                                  {"axis": q.axis}, before=first_user)
        out = node.outputs[0]
        out.dtype, out.shape = "float32", value.shape
        for user, index in value.uses():
            if user is not node:
                user.set_input(index, out)
    return len(quantized)


# (op type, input index) -> axis of the output channels, given the node; None: not a weight slot
_INT8_WEIGHT_AXIS = {
    ("Conv", 1): lambda node, w: 0,
    ("Gemm", 1): lambda node, w: 0 if node.attrs.get("transB", 0) else 1,
    ("MatMul", 1): lambda node, w: w.ndim - 1,
    ("LSTM", 1): lambda node, w: 1,
    ("LSTM", 2): lambda node, w: 1,
    ("GRU", 1): lambda node, w: 1,
    ("GRU", 2): lambda node, w: 1,
}


def _int8_weights(graph: Graph) -> dict[Value, int]:
    """float32 initializers read only through weight slots that agree on one channel axis."""
    chosen = {}
    for value in graph.initializers:
        if value.data.dtype != np.float32 or value.quantization is not None or value.data.ndim < 2:
            continue
        axes = set()
        for node, index in value.uses():
            onnx_op = node.domain in ("", "ai.onnx")
            rule = _INT8_WEIGHT_AXIS.get((node.op_type, index)) if onnx_op else None
            axes.add(None if rule is None else rule(node, value.data))
        if len(axes) == 1 and None not in axes and value not in graph.outputs:
            chosen[value] = axes.pop()
    return chosen


def _fp16_weights(graph: Graph) -> dict[Value, None]:
    """float32 initializers of FP16_MIN_ELEMENTS or more whose values float16 can hold (a -1e9
    attention mask stays float32)."""
    return {value: None for value in graph.initializers
            if value.data.dtype == np.float32 and value.quantization is None
            and value.data.size >= FP16_MIN_ELEMENTS and value not in graph.outputs
            and np.all(np.abs(value.data) <= FLOAT16_MAX)}
