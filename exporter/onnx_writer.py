"""Write a `Graph` as an ONNX model: a direct translation, since the IR speaks ONNX semantics.

Attribute kinds come from the op's ONNX schema when there is one (so `alpha=1` is written as the
FLOAT that LeakyRelu declares, and an empty list gets its declared kind), and are inferred from
the Python value otherwise. A node's source location and module path go into its
metadata_props under the keys `read_onnx` reads back, and into its doc_string for people.
A `.mkb` memory plan and test vectors are runtime artifacts with no ONNX counterpart and are not
written; quantization parameters change meaning, so a graph holding them is refused.
Attributes are written sorted by name, as in `.mkb` files, so the same graph always gives the
same bytes however its attribute dicts were built. onnx is imported lazily, inside the functions.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

import numpy as np

from modelkit.edge_runtime.atomic_file import write_atomically, write_files_atomically
from modelkit.edge_runtime.format.onnx_reader import MODULE_KEY, ONNX_DTYPES, SOURCE_KEY
from modelkit.exporter.errors import ExportError
from modelkit.exporter.ir import Graph, Node, Value

ONNX_TYPE_OF = {name: code for code, name in ONNX_DTYPES.items()}

# The IR version that introduced node metadata_props (onnx 1.16).
_NODE_METADATA_IR_VERSION = 10


def to_proto(graph: Graph, opset: Optional[int] = None):
    """The graph as an `onnx.ModelProto`; `opset` overrides the default-domain opset it records.

    Example:
        >>> import onnx
        >>> g = Graph(); x = g.add_input("x", "float32", ("batch", 2))
        >>> y = g.add_node("Relu", [x], ["y"]).outputs[0]; y.dtype, y.shape = "float32", ("batch", 2)
        >>> g.outputs.append(y)
        >>> onnx.checker.check_model(to_proto(g), full_check=True)
    """
    from onnx import helper

    opsets = dict(graph.opsets)
    if opset is not None:
        opsets[""] = opset
    for node in graph.nodes:
        opsets.setdefault(node.domain, 1)
    quantized = [v.name for v in graph.values.values() if v.quantization is not None]
    if quantized:
        raise ExportError(f"values {quantized[:5]} carry .mkb quantization parameters, which an ONNX "
                          "file cannot hold; express them as DequantizeLinear nodes first")
    outputs = {id(v) for v in graph.outputs}
    io = outputs | {id(v) for v in graph.inputs}
    graph_proto = helper.make_graph(
        [_node_proto(n, opsets) for n in graph.nodes],
        graph.name,
        [_value_info_proto(v, "input") for v in graph.inputs],
        [_value_info_proto(v, "output") for v in graph.outputs],
        [_tensor_proto(v.data, v.name, v.dtype) for v in graph.initializers],
        value_info=[_value_info_proto(v, "value") for v in graph.values.values()
                    if v.producer is not None and v.dtype is not None and id(v) not in io],
    )
    opset_ids = [helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    ir_version = helper.find_min_ir_version_for(opset_ids, ignore_unknown=True)
    if any(n.source or n.module for n in graph.nodes):
        ir_version = max(ir_version, _NODE_METADATA_IR_VERSION)
    model = helper.make_model(graph_proto, opset_imports=opset_ids, ir_version=ir_version,
                              producer_name=graph.producer_name)
    if graph.metadata:
        helper.set_model_props(model, graph.metadata)
    return model


def save(graph: Graph, path, opset: Optional[int] = None,
         external_data: Optional[bool] = None) -> None:
    """Write the graph as an ONNX file at `path`, atomically (a reader never sees half a file).

    With `external_data=True`, weights of 1 KiB and more go to `<file name>.data` beside it, as
    onnx's external-data format; None (the default) does so only when the weights would not fit
    protobuf's 2 GiB message limit.

    Example:
        >>> import os, tempfile
        >>> g = Graph(); x = g.add_input("x", "float32", (2,)); g.outputs.append(x)
        >>> path = os.path.join(tempfile.mkdtemp(), "identity.onnx"); save(g, path)
        >>> os.path.getsize(path) > 0
        True
    """
    proto = to_proto(graph, opset)
    if external_data is None:
        external_data = sum(v.data.nbytes for v in graph.initializers) > _INLINE_WEIGHT_LIMIT
    if external_data:
        location = os.path.basename(os.fspath(path)) + ".data"
        data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
        # The generator moves each weight out of the proto as it is written, so the model
        # bytes are serialised only after the data file's chunks are all consumed.
        write_files_atomically({
            data_path: _moved_out_weights(proto, location),
            path: _serialised(proto),
        })
        return
    write_atomically(path, [proto.SerializeToString(deterministic=True)])


def _serialised(proto):
    yield proto.SerializeToString(deterministic=True)


# protobuf refuses to serialise a message of 2 GiB or more; leave room for the graph itself.
_INLINE_WEIGHT_LIMIT = 2**31 - 2**26
_EXTERNAL_MIN_BYTES = 1024
_EXTERNAL_ALIGNMENT = 4096  # page-aligned, so readers may map each tensor


def _moved_out_weights(proto, location: str):
    """Yield the external-data file's bytes while pointing each large initializer at them."""
    from onnx.external_data_helper import set_external_data

    offset = 0
    for tensor in proto.graph.initializer:
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
            continue
        padding = -offset % _EXTERNAL_ALIGNMENT
        yield bytes(padding)
        offset += padding
        set_external_data(tensor, location, offset, len(tensor.raw_data))
        yield tensor.raw_data
        offset += len(tensor.raw_data)
        tensor.ClearField("raw_data")


def _node_proto(node: Node, opsets: dict[str, int]):
    from onnx import NodeProto, StringStringEntryProto

    proto = NodeProto(op_type=node.op_type,
                      input=[v.name if v is not None else "" for v in node.inputs],
                      output=[v.name if v is not None else "" for v in node.outputs])
    # proto2 records a set field even when empty: leave unset what the IR leaves empty.
    if node.domain:
        proto.domain = node.domain
    if node.name:
        proto.name = node.name
    kinds = _schema_attribute_kinds(node.op_type, node.domain, opsets[node.domain])
    proto.attribute.extend(_attribute_proto(node, key, value, kinds.get(key))
                           for key, value in sorted(node.attrs.items()))
    for key, value in ((SOURCE_KEY, node.source), (MODULE_KEY, node.module)):
        if value:
            proto.metadata_props.append(StringStringEntryProto(key=key, value=value))
    if node.source or node.module:
        proto.doc_string = f"{node.source} ({node.module})" if node.module else node.source
    return proto


@functools.lru_cache(maxsize=None)
def _schema_attribute_kinds(op_type: str, domain: str, opset: int) -> dict[str, int]:
    from onnx import defs

    try:
        schema = defs.get_schema(op_type, opset, domain)
    except defs.SchemaError:
        return {}
    return {name: int(a.type) for name, a in schema.attributes.items()}


def _attribute_proto(node: Node, key: str, value: Any, kind: Optional[int]):
    from onnx import AttributeProto as A, helper

    kind = kind if kind is not None else _inferred_kind(node, key, value)
    try:
        if kind == A.INT:
            value = int(value)
        elif kind == A.FLOAT:
            value = float(value)
        elif kind == A.INTS:
            value = [int(x) for x in np.asarray(value).reshape(-1)]
        elif kind == A.FLOATS:
            value = [float(x) for x in np.asarray(value).reshape(-1)]
        elif kind == A.STRINGS:
            value = list(value)
        elif kind == A.TENSOR:
            return helper.make_attribute(key, _tensor_proto(np.asarray(value), ""), attr_type=A.TENSOR)
        elif kind != A.STRING:
            raise ExportError(f"node {node.name!r} ({node.op_type}) attribute {key!r} has kind "
                              f"{A.AttributeType.Name(kind)}, which the IR cannot hold")
        return helper.make_attribute(key, value, attr_type=kind)
    except (TypeError, ValueError) as e:
        raise ExportError(f"node {node.name!r} ({node.op_type}) attribute {key!r}: cannot write "
                          f"{value!r} as {A.AttributeType.Name(kind)}: {e}") from None


def _inferred_kind(node: Node, key: str, value: Any) -> int:
    from onnx import AttributeProto as A

    if isinstance(value, np.ndarray):
        return A.TENSOR
    if isinstance(value, (bool, int, np.integer)):
        return A.INT
    if isinstance(value, (float, np.floating)):
        return A.FLOAT
    if isinstance(value, (str, bytes)):
        return A.STRING
    if not isinstance(value, (list, tuple)):
        raise ExportError(f"node {node.name!r} ({node.op_type}) attribute {key!r} is a "
                          f"{type(value).__name__}; attributes are numbers, strings, their lists "
                          "or numpy arrays")
    items = list(value)
    if items and all(isinstance(x, (str, bytes)) for x in items):
        return A.STRINGS
    if any(isinstance(x, (float, np.floating)) for x in items):
        return A.FLOATS
    return A.INTS


def _tensor_proto(array: np.ndarray, name: str, dtype: Optional[str] = None):
    from onnx import TensorProto, helper, numpy_helper

    if dtype == "bfloat16" and array.dtype == np.uint16:  # bit patterns, see ir.add_initializer
        return helper.make_tensor(name, TensorProto.BFLOAT16, array.shape,
                                  np.ascontiguousarray(array, "<u2").tobytes(), raw=True)
    if array.dtype.kind == "U":  # onnx stores strings as utf-8 bytes
        array = np.char.encode(array, "utf-8").astype(object)
    return numpy_helper.from_array(array, name)


def _value_info_proto(value: Value, kind: str):
    from onnx import helper

    if value.dtype is None:
        raise ExportError(f"graph {kind} {value.name!r} has no dtype; set value.dtype before writing")
    if value.dtype not in ONNX_TYPE_OF:
        raise ExportError(f"graph {kind} {value.name!r} has dtype {value.dtype!r}; ONNX files "
                          f"hold {', '.join(ONNX_TYPE_OF)}")
    return helper.make_tensor_value_info(value.name, ONNX_TYPE_OF[value.dtype], value.shape)
