"""`modelkit.edge_runtime.format.onnx_reader.read_onnx`: ONNX protobuf -> plain-data Model."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format.onnx_reader import MODULE_KEY, SOURCE_KEY, read_onnx

import onnx_fixture_models


def _one_node_model(node, inputs=None, outputs=None, initializers=(), opset_domain=""):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    graph = helper.make_graph([node], "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(opset_domain, 17)])


def test_reads_graph_structure_weights_and_metadata():
    proto, _ = onnx_fixture_models.conv_net()
    onnx.helper.set_model_props(proto, {"author": "me"})
    model = read_onnx(proto)
    assert [v.name for v in model.inputs] == ["x"]
    assert model.inputs[0].dtype == "float32" and model.inputs[0].shape == ("batch", 3, 16, 16)
    assert [(v.name, v.shape) for v in model.outputs] == [("logits", ("batch", 10))]
    assert [n.op_type for n in model.nodes][:3] == ["Conv", "BatchNormalization", "Relu"]
    assert model.nodes[0].name == "conv1" and model.nodes[0].inputs == ["x", "w1", "b1"]
    assert model.nodes[0].attrs == {"pads": [1, 1, 1, 1]}
    expected_w1 = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "w1"))
    np.testing.assert_array_equal(model.initializers["w1"], expected_w1)
    assert model.initializers["w1"].dtype == np.float32
    assert model.opsets == {"": 17}
    assert model.metadata == {"author": "me"}
    assert model.producer == "onnx.helper" and model.graph_name == "conv_net"


def test_attribute_kinds_are_converted_to_plain_python():
    value = np.arange(6, dtype=np.int64).reshape(2, 3)
    node = helper.make_node("Custom", ["x"], ["y"], name="n", domain="my.ops",
                            i=3, f=0.5, s="text", raw=b"\xff\x00", ints=[1, 2], floats=[0.25],
                            strings=["a", "b"], t=numpy_helper.from_array(value))
    model = read_onnx(_one_node_model(node))
    attrs = model.nodes[0].attrs
    assert attrs["i"] == 3 and attrs["f"] == 0.5 and attrs["s"] == "text"
    assert attrs["raw"] == b"\xff\x00"
    assert attrs["ints"] == [1, 2] and attrs["floats"] == [0.25] and attrs["strings"] == ["a", "b"]
    np.testing.assert_array_equal(attrs["t"], value)
    assert model.nodes[0].domain == "my.ops"


def test_graph_attribute_is_refused_naming_node_and_kind():
    body = helper.make_graph([], "body", [], [])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=body)
    with pytest.raises(ModelFormatError, match=r"'branch'.*GRAPH"):
        read_onnx(_one_node_model(node))


def test_ai_onnx_domain_is_the_default_domain():
    node = helper.make_node("Relu", ["x"], ["y"], domain="ai.onnx")
    model = read_onnx(_one_node_model(node, opset_domain="ai.onnx"))
    assert model.opsets == {"": 17}
    assert model.nodes[0].domain == ""


def test_unknown_dims_get_unique_names_that_do_not_clash():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, "unk__0", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = read_onnx(_one_node_model(helper.make_node("Relu", ["x"], ["y"]), [x], [y]))
    first, second, third = model.inputs[0].shape
    assert second == "unk__0" and third == 3
    assert isinstance(first, str) and first.startswith("unk__") and first != "unk__0"
    assert model.outputs[0].shape is None  # rank unknown


def test_initializers_listed_as_inputs_are_not_inputs():
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "w")]
    model = read_onnx(_one_node_model(helper.make_node("Add", ["x", "w"], ["y"]), inputs, None, [w]))
    assert [v.name for v in model.inputs] == ["x"]
    assert list(model.initializers) == ["w"]


def test_source_and_module_come_from_node_metadata_props():
    node = helper.make_node("Relu", ["x"], ["y"])
    helper.set_metadata_props(node, {SOURCE_KEY: "model.py:12", MODULE_KEY: "features.0"})
    model = read_onnx(_one_node_model(node))
    assert (model.nodes[0].source, model.nodes[0].module) == ("model.py:12", "features.0")


def test_unsupported_element_type_is_a_format_error_naming_the_tensor():
    x = helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [2])
    with pytest.raises(ModelFormatError, match=r"'x'.*COMPLEX64"):
        read_onnx(_one_node_model(helper.make_node("Identity", ["x"], ["y"]), [x]))


def test_external_data_is_read_relative_to_the_model_file(tmp_path):
    proto, _ = onnx_fixture_models.mlp()
    expected = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "w1"))
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size > 0
    model = read_onnx(path)
    np.testing.assert_array_equal(model.initializers["w1"], expected)


def test_external_data_without_a_directory_is_a_clear_error(tmp_path):
    proto, _ = onnx_fixture_models.mlp()
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    with pytest.raises(ModelFormatError, match="external file 'weights.bin'.*path"):
        read_onnx(onnx.load(path, load_external_data=False))


def test_missing_external_data_file_is_a_format_error(tmp_path):
    proto, _ = onnx_fixture_models.mlp()
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelFormatError, match="external data"):
        read_onnx(path)


def test_corrupt_file_is_a_format_error(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07\x12")
    with pytest.raises(ModelFormatError, match="not a valid ONNX model"):
        read_onnx(path)


def test_reads_file_bytes_like_a_proto():
    proto, _ = onnx_fixture_models.lstm()
    from_bytes = read_onnx(proto.SerializeToString())
    assert from_bytes.nodes[0].inputs == ["x", "W", "R", "B", "", "h0"]
    assert [v.name for v in from_bytes.outputs] == ["Y", "Y_h", "Y_c"]


def test_importing_edge_runtime_reader_does_not_import_onnx():
    code = ("import sys, modelkit.edge_runtime.format.onnx_reader; "
            "assert 'onnx' not in sys.modules, 'onnx imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
