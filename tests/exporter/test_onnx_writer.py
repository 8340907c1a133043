"""`modelkit.exporter.onnx_writer`: IR graphs built by hand -> valid, deterministic ONNX files."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import AttributeProto, numpy_helper

from modelkit.edge_runtime.format.onnx_reader import MODULE_KEY, SOURCE_KEY, read_onnx
from modelkit.exporter import onnx_writer
from modelkit.exporter.errors import ExportError
from modelkit.exporter.ir import Graph


def _small_net():
    """x -> Gemm(fc) -> LeakyRelu(alpha given as the int 0) -> Pad(mode) -> y, traced-style."""
    g = Graph()
    x = g.add_input("x", "float32", ("batch", 4))
    w = g.add_initializer("fc.weight", np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
    b = g.add_initializer("fc.bias", np.array([0.5, -1.0, 0.0], np.float32))
    h = g.add_node("Gemm", [x, w, b], attrs={"transB": 1}, module="fc", source="model.py:10").outputs[0]
    h.dtype, h.shape = "float32", ("batch", 3)
    r = g.add_node("LeakyRelu", [h], attrs={"alpha": 0}, module="act", source="model.py:11").outputs[0]
    r.dtype, r.shape = "float32", ("batch", 3)
    pads = g.add_initializer("pads", np.array([0, 1, 0, 1], np.int64))
    y = g.add_node("Pad", [r, pads], ["y"], attrs={"mode": "edge"}).outputs[0]
    y.dtype, y.shape = "float32", ("batch", 5)
    g.outputs.append(y)
    return g


def _expected(x):
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    h = x @ w.T + np.array([0.5, -1.0, 0.0], np.float32)
    r = np.maximum(h, 0)  # LeakyRelu with alpha 0
    return np.pad(r, ((0, 0), (1, 1)), mode="edge")


def test_written_file_passes_full_check_and_computes_the_graph(tmp_path):
    path = tmp_path / "net.onnx"
    onnx_writer.save(_small_net(), path)
    onnx.checker.check_model(str(path), full_check=True)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x})
    np.testing.assert_allclose(y, _expected(x), rtol=1e-6, atol=1e-6)
    assert [d for d in sess.get_inputs()[0].shape] == ["batch", 4]


def test_attribute_kinds_follow_the_onnx_schema():
    proto = onnx_writer.to_proto(_small_net())
    gemm, leaky, pad = proto.graph.node
    assert leaky.attribute[0].type == AttributeProto.FLOAT and leaky.attribute[0].f == 0.0
    assert gemm.attribute[0].type == AttributeProto.INT
    assert pad.attribute[0].type == AttributeProto.STRING and pad.attribute[0].s == b"edge"


def test_attribute_kinds_are_inferred_for_custom_ops():
    g = Graph(opsets={"": 17, "my.ops": 1})
    x = g.add_input("x", "float32", (2,))
    y = g.add_node("Thing", [x], ["y"], domain="my.ops",
                   attrs={"n": np.int64(2), "scale": np.float32(0.5), "empty": [], "mixed": [1, 2.5],
                          "names": ["a", "b"], "table": np.eye(2, dtype=np.float32)}).outputs[0]
    y.dtype, y.shape = "float32", (2,)
    g.outputs.append(y)
    kinds = {a.name: a.type for a in onnx_writer.to_proto(g).graph.node[0].attribute}
    A = AttributeProto
    assert kinds == {"n": A.INT, "scale": A.FLOAT, "empty": A.INTS, "mixed": A.FLOATS,
                     "names": A.STRINGS, "table": A.TENSOR}


def test_unwritable_attribute_is_an_export_error_naming_node_and_attribute():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    y = g.add_node("Relu", [x], ["y"], name="act", attrs={"weird": {"a": 1}}).outputs[0]
    y.dtype, y.shape = "float32", (2,)
    g.outputs.append(y)
    with pytest.raises(ExportError, match=r"'act' \(Relu\) attribute 'weird' is a dict"):
        onnx_writer.to_proto(g)


def test_source_and_module_are_kept_in_node_metadata_and_doc_string():
    proto = onnx_writer.to_proto(_small_net())
    gemm = proto.graph.node[0]
    assert {p.key: p.value for p in gemm.metadata_props} == {SOURCE_KEY: "model.py:10", MODULE_KEY: "fc"}
    assert "model.py:10" in gemm.doc_string and "fc" in gemm.doc_string
    assert not proto.graph.node[2].metadata_props  # the Pad node has no source
    back = read_onnx(proto)
    assert (back.nodes[1].source, back.nodes[1].module) == ("model.py:11", "act")


def test_initializers_and_value_info_are_written():
    proto = onnx_writer.to_proto(_small_net())
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert list(weights) == ["fc.weight", "fc.bias", "pads"]
    np.testing.assert_array_equal(weights["pads"], [0, 1, 0, 1])
    assert [v.name for v in proto.graph.value_info] == ["fc/Gemm_output_0", "act/LeakyRelu_output_0"]


def test_opset_override_and_metadata():
    g = _small_net()
    g.metadata = {"trained_on": "digits"}
    proto = onnx_writer.to_proto(g, opset=13)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    assert {p.key: p.value for p in proto.metadata_props} == {"trained_on": "digits"}
    assert proto.producer_name == "modelkit"
    onnx.checker.check_model(proto, full_check=True)


def test_same_graph_gives_identical_bytes(tmp_path):
    onnx_writer.save(_small_net(), tmp_path / "a.onnx")
    onnx_writer.save(_small_net(), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"old")
    onnx_writer.save(_small_net(), path)
    assert os.listdir(tmp_path) == ["net.onnx"]
    onnx.checker.check_model(str(path))


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"old")
    g = _small_net()
    g.outputs[0].dtype = None
    with pytest.raises(ExportError, match="output 'y' has no dtype"):
        onnx_writer.save(g, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["net.onnx"]


def test_mkb_quantization_cannot_silently_disappear():
    from modelkit.edge_runtime.format.model import Quantization

    g = _small_net()
    g.value("fc.weight").quantization = Quantization(np.array([0.1], np.float32), np.array([0], np.int8))
    with pytest.raises(ExportError, match="quantization"):
        onnx_writer.to_proto(g)


def test_external_data_file_holds_the_large_weights(tmp_path):
    g = _small_net()
    small = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)  # stays inline
    g.add_initializer("unused.table", np.arange(1024, dtype=np.float32))  # 4 KiB: goes out
    g.add_initializer("unused.small", small)
    path = tmp_path / "net.onnx"
    onnx_writer.save(g, path, external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["net.onnx", "net.onnx.data"]
    proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external == ["unused.table"]
    onnx.checker.check_model(str(path), full_check=True)
    back = read_onnx(path)
    np.testing.assert_array_equal(back.initializers["unused.table"], np.arange(1024, dtype=np.float32))
    np.testing.assert_array_equal(back.initializers["unused.small"], small)
    x = np.ones((2, 4), np.float32)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, _expected(x), rtol=1e-6)
