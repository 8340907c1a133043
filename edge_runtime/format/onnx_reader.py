"""Read an ONNX model into the shared plain-data `Model`.

onnx is imported inside `read_onnx`, so importing `modelkit.edge_runtime` never imports it.

Conventions (the ONNX writer in `modelkit.exporter.onnx_writer` uses the same ones):
- A dim with `dim_value` becomes that int, one with `dim_param` that name. A dim with neither
  (unknown, unconstrained) gets a generated name `unk__<k>`, unique within the model and never
  equal to a `dim_param` of the file, so runtimes treat it as one free symbolic dim (onnxruntime
  names such dims the same way). A value whose type has no shape at all gets `shape=None`.
- `ai.onnx` and `""` both name the default domain; the `Model` always spells it `""`.
- A node's user source location and module path are kept in its metadata_props under
  `SOURCE_KEY` and `MODULE_KEY`; nodes from other producers get empty strings.
- bfloat16 weights become uint16 arrays of their bit patterns, declared "bfloat16" in
  `value_info` (the `Model` convention); bfloat16 tensor attributes stay ml_dtypes arrays.
- Graph inputs that are also initializers (the pre-IR-4 style) are initializers, not inputs.
- Nodes keep the file's order; whether it is topological is for `graph_check` to say.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format.model import Model, Node, ValueInfo

SOURCE_KEY = "modelkit.source"
MODULE_KEY = "modelkit.module"
UNKNOWN_DIM_PREFIX = "unk__"

# TensorProto.DataType -> element type name as `Model` spells it (see model.DTYPES).
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    16: "bfloat16",
}


def read_onnx(source) -> Model:
    """Read an ONNX model (a path, the file's bytes, or an `onnx.ModelProto`) into a `Model`.

    External-data files are resolved relative to the model file's directory when `source` is a
    path; a ModelProto or bytes holding references to external data raise `ModelFormatError`.

    Example:
        >>> import onnx
        >>> from onnx import TensorProto, helper
        >>> g = helper.make_graph(
        ...     [helper.make_node("Relu", ["x"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
        >>> m = read_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
        >>> m.nodes[0].op_type, m.inputs[0].shape, m.opsets
        ('Relu', ('batch', 4), {'': 17})
    """
    proto = _load_proto(source)
    graph = proto.graph
    if len(graph.sparse_initializer):
        raise ModelFormatError(
            f"sparse initializer {graph.sparse_initializer[0].values.name!r}: sparse "
            "initializers are not supported; store the tensor densely")
    names = _DimNamer(graph)
    initializers = {t.name: _tensor_to_array(t, f"initializer {t.name!r}") for t in graph.initializer}
    inputs = [_value_info(v, names, "graph input") for v in graph.input if v.name not in initializers]
    outputs = [_value_info(v, names, "graph output") for v in graph.output]
    value_info = [_value_info(v, names, "value_info") for v in graph.value_info
                  if v.type.WhichOneof("value") == "tensor_type"]
    _bfloat16_as_bits(initializers, value_info)
    return Model(
        inputs=inputs,
        outputs=outputs,
        nodes=[_node(n, i) for i, n in enumerate(graph.node)],
        initializers=initializers,
        value_info=value_info,
        opsets=_opsets(proto),
        metadata={p.key: p.value for p in proto.metadata_props},
        producer=proto.producer_name,
        graph_name=graph.name,
    )


def _bfloat16_as_bits(initializers: dict, value_info: list) -> None:
    """Store bfloat16 weights as the `Model` does: uint16 bit patterns declared "bfloat16"."""
    declared = {v.name for v in value_info}
    for name, array in initializers.items():
        if array.dtype.name == "bfloat16":
            initializers[name] = array.view(np.uint16)
            if name not in declared:
                value_info.append(ValueInfo(name, "bfloat16", array.shape))


def _load_proto(source):
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.checker import ValidationError

    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_from_string(bytes(source))
        except DecodeError as e:
            raise ModelFormatError(f"not a valid ONNX model: {e}") from None
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no ONNX file at {os.fspath(source)!r}")
        try:
            proto = onnx.load(source)
        except DecodeError as e:
            raise ModelFormatError(f"{os.fspath(source)!r} is not a valid ONNX model: {e}") from None
        except (OSError, ValueError, ValidationError) as e:  # missing or escaping external data
            raise ModelFormatError(
                f"{os.fspath(source)!r}: cannot load its external data: {e}") from None
    else:
        raise TypeError(f"read_onnx takes a path, bytes or onnx.ModelProto, got {type(source).__name__}")
    return proto


def _tensor_to_array(tensor, what: str):
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        location = {e.key: e.value for e in tensor.external_data}.get("location", "?")
        raise ModelFormatError(
            f"{what} keeps its data in the external file {location!r}, which cannot be resolved "
            "without the model's directory: pass the model's path instead of a ModelProto or bytes")
    if tensor.data_type not in ONNX_DTYPES:
        raise ModelFormatError(f"{what} has element type {_onnx_type_name(tensor.data_type)}, "
                               f"which is not supported (supported: {_supported_dtypes()})")
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as e:
        raise ModelFormatError(f"{what}: cannot decode its data: {e}") from None


def _value_info(v, names: "_DimNamer", what: str) -> ValueInfo:
    kind = v.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ModelFormatError(f"{what} {v.name!r} has type {kind or 'unset'}; only tensors are supported")
    t = v.type.tensor_type
    if t.elem_type not in ONNX_DTYPES:
        raise ModelFormatError(f"{what} {v.name!r} has element type {_onnx_type_name(t.elem_type)}, "
                               f"which is not supported (supported: {_supported_dtypes()})")
    shape = tuple(names.dim(d) for d in t.shape.dim) if t.HasField("shape") else None
    return ValueInfo(v.name, ONNX_DTYPES[t.elem_type], shape)


class _DimNamer:
    """Turns ONNX dims into `Dim`s, naming unknown dims `unk__<k>` without clashing."""

    def __init__(self, graph):
        self._taken = {d.dim_param
                       for vs in (graph.input, graph.output, graph.value_info)
                       for v in vs if v.type.WhichOneof("value") == "tensor_type"
                       for d in v.type.tensor_type.shape.dim if d.HasField("dim_param")}
        self._next = 0

    def dim(self, d):
        if d.HasField("dim_value"):
            return d.dim_value
        if d.HasField("dim_param"):
            return d.dim_param
        while f"{UNKNOWN_DIM_PREFIX}{self._next}" in self._taken:
            self._next += 1
        name = f"{UNKNOWN_DIM_PREFIX}{self._next}"
        self._next += 1
        return name


def _node(n, index: int) -> Node:
    label = f"node {n.name!r} ({n.op_type})" if n.name else f"node #{index} ({n.op_type})"
    meta = {p.key: p.value for p in n.metadata_props}
    return Node(
        op_type=n.op_type,
        inputs=list(n.input),
        outputs=list(n.output),
        attrs={a.name: _attribute(a, label) for a in n.attribute},
        name=n.name,
        domain="" if n.domain == "ai.onnx" else n.domain,
        source=meta.get(SOURCE_KEY, ""),
        module=meta.get(MODULE_KEY, ""),
    )


def _attribute(a, label: str) -> Any:
    from onnx import AttributeProto as A

    kind = a.type
    if kind == A.INT:
        return a.i
    if kind == A.FLOAT:
        return a.f
    if kind == A.STRING:
        return _text(a.s)
    if kind == A.INTS:
        return list(a.ints)
    if kind == A.FLOATS:
        return list(a.floats)
    if kind == A.STRINGS:
        return [_text(s) for s in a.strings]
    if kind == A.TENSOR:
        return _tensor_to_array(a.t, f"{label} attribute {a.name!r}")
    kind_name = A.AttributeType.Name(kind) if kind in A.AttributeType.values() else str(kind)
    raise ModelFormatError(f"{label} attribute {a.name!r} has kind {kind_name}; "
                           "only INT, FLOAT, STRING, TENSOR and their lists are supported")


def _text(raw: bytes):
    # ONNX STRING attributes are bytes; almost always utf-8 text, but keep real binary intact.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _opsets(proto) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        opsets[domain] = max(opsets.get(domain, 0), o.version)
    return opsets


def _onnx_type_name(elem_type: int) -> str:
    from onnx import TensorProto

    dt = TensorProto.DataType
    return dt.Name(elem_type) if elem_type in dt.values() else f"#{elem_type}"


def _supported_dtypes() -> str:
    return ", ".join(ONNX_DTYPES.values())
