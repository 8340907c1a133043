"""Fuzz target: the ONNX importer (`converters.onnx_import.load`).

Real ModelProtos (a conv net, an MLP and an LSTM from the converter fixtures) are mutated at two
levels: their serialized bytes (truncation, byte flips), and their fields (op types, attribute
types and values, dims, dtypes, raw data lengths, node inputs and outputs, external-data
locations that escape the model's folder). Every case must give a `Graph` or a
`ConversionError`, within a wall-clock limit.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from hypothesis import given, strategies as st
from onnx import AttributeProto, TensorProto, helper

from fuzz_settings import fuzz, wall_clock_limit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "converters"))
from onnx_fixture_models import conv_net, lstm, mlp  # noqa: E402

from modelkit.converters import onnx_import  # noqa: E402
from modelkit.converters.errors import ConversionError  # noqa: E402
from modelkit.exporter.ir import Graph  # noqa: E402

CASE_SECONDS = 10
PROTOS = {"conv_net": conv_net()[0], "mlp": mlp()[0], "lstm": lstm()[0]}
SERIALIZED = {name: p.SerializeToString() for name, p in PROTOS.items()}


def import_guarded(source):
    with wall_clock_limit(CASE_SECONDS):
        try:
            return onnx_import.load(source)
        except ConversionError as refusal:
            return refusal


@fuzz(300)
@given(st.sampled_from(sorted(SERIALIZED)), st.data())
def test_mutated_bytes_import_or_raise_conversion_error(name, data):
    blob = bytearray(SERIALIZED[name])
    for _ in range(data.draw(st.integers(1, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob) - 1)):]
    result = import_guarded(bytes(blob))
    assert isinstance(result, (Graph, ConversionError))


def _attribute(draw, name):
    kind = draw(st.sampled_from(["int", "float", "str", "ints", "floats", "tensor", "empty"]))
    value = {
        "int": st.integers(-(2 ** 63), 2 ** 63 - 1),
        "float": st.floats(allow_nan=True, allow_infinity=True, width=32),
        "str": st.text(max_size=8),
        "ints": st.lists(st.integers(-(2 ** 40), 2 ** 40), min_size=1, max_size=6),
        "floats": st.lists(st.floats(width=32), min_size=1, max_size=4),
        "tensor": st.just(helper.make_tensor("t", TensorProto.FLOAT, [2], [1.0, 2.0])),
        "empty": st.just([]),
    }[kind]
    return helper.make_attribute(name, draw(value)) if kind != "empty" else \
        AttributeProto(name=name, type=AttributeProto.INTS)


def _mutate_fields(draw, proto):
    graph = proto.graph
    if not len(graph.node):
        return
    kind = draw(st.sampled_from(["op_type", "attribute", "dim", "elem_type", "raw_data",
                                 "node_io", "initializer_dims", "external_data", "opset",
                                 "drop_node"]))
    node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
    if kind == "op_type":
        node.op_type = draw(st.sampled_from(["", "Foo", "Loop", "If", "Scan", "Relu", "Conv",
                                             "Reshape"]) | st.text(max_size=6))
    elif kind == "attribute":
        name = draw(st.sampled_from(["axis", "kernel_shape", "pads", "strides", "group", "alpha",
                                     "hidden_size", "perm", "to"]))
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [_attribute(draw, name)])
    elif kind == "dim":
        value = graph.input[0].type.tensor_type.shape.dim
        dim = value[draw(st.integers(0, len(value) - 1))]
        dim.dim_value = draw(st.sampled_from([-1, -7, 0, 2 ** 62]) | st.integers(-5, 40))
    elif kind == "elem_type":
        target = draw(st.sampled_from([graph.input[0], graph.output[0]]))
        target.type.tensor_type.elem_type = draw(st.integers(0, 40))
    elif kind == "raw_data":
        tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        raw = tensor.raw_data or np.asarray(tensor.float_data, np.float32).tobytes()
        tensor.ClearField("float_data")
        tensor.raw_data = raw[:draw(st.integers(0, len(raw)))]
    elif kind == "node_io":
        names = [v.name for v in graph.input] + [o for n in graph.node for o in n.output]
        side = node.input if draw(st.booleans()) else node.output
        if len(side):
            side[draw(st.integers(0, len(side) - 1))] = draw(
                st.sampled_from(names + ["", "ghost"]))
    elif kind == "initializer_dims":
        tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        del tensor.dims[:]
        tensor.dims.extend(draw(st.lists(st.integers(-3, 2 ** 40), max_size=4)))
    elif kind == "external_data":
        tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        location = draw(st.sampled_from(["../../../../etc/passwd", "/etc/passwd", "missing.bin",
                                         "weights.bin"]))
        for key, value in (("location", location), ("offset", str(draw(st.integers(0, 99)))),
                           ("length", str(draw(st.integers(0, 99))))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    elif kind == "opset":
        proto.opset_import[0].version = draw(st.integers(-1, 40))
    else:
        graph.node.remove(node)


@fuzz(300)
@given(st.sampled_from(sorted(PROTOS)), st.data())
def test_mutated_fields_import_or_raise_conversion_error(tmp_path_factory, name, data):
    proto = type(PROTOS[name])()
    proto.CopyFrom(PROTOS[name])
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate_fields(data.draw, proto)
    folder = tmp_path_factory.mktemp("onnx")
    # weights.bin exists beside the model, so an in-folder external reference may succeed.
    (folder / "weights.bin").write_bytes(bytes(range(64)))
    path = folder / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    result = import_guarded(str(path))
    assert isinstance(result, (Graph, ConversionError))
    if isinstance(result, Graph):
        assert all(v.data.nbytes <= 64 or v.name in {i.name for i in PROTOS[name].graph.initializer}
                   for v in result.initializers)


def _with_external_weight(location: str):
    proto = type(PROTOS["mlp"])()
    proto.CopyFrom(PROTOS["mlp"])
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return proto


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\1" * 4096)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "link.bin").symlink_to(tmp_path / "secret.bin")
    for location, words in (("../secret.bin", "points outside the directory"),
                            ("link.bin", "symbolic link")):
        path = tmp_path / "m" / "model.onnx"
        path.write_bytes(_with_external_weight(location).SerializeToString())
        result = import_guarded(str(path))
        assert isinstance(result, ConversionError) and words in str(result), result
    result = import_guarded(_with_external_weight("w.bin").SerializeToString())
    assert isinstance(result, ConversionError) and "pass the model's path" in str(result)
