"""`.mkb -> ONNX`: ONNX -> IR -> .mkb -> `mkb_import.load` -> ONNX, checked with onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelkit.converters import mkb_import, onnx_import
from modelkit.exporter import mkb_writer, onnx_writer
from modelkit.exporter.ir import Graph

import onnx_fixture_models


def _run(source, feeds):
    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    return ort.InferenceSession(str(source) if not isinstance(source, bytes) else source,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("name", sorted(onnx_fixture_models.ALL))
def test_mkb_to_onnx_matches_onnxruntime_on_the_original(name, tmp_path):
    original, feeds = onnx_fixture_models.ALL[name]()
    mkb_path, onnx_path = tmp_path / f"{name}.mkb", tmp_path / f"{name}.onnx"
    mkb_writer.save(onnx_import.load(original), mkb_path)
    onnx_writer.save(mkb_import.load(mkb_path), onnx_path)
    onnx.checker.check_model(str(onnx_path), full_check=True)
    expected, got = _run(original, feeds), _run(onnx_path, feeds)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_bfloat16_weights_survive_the_mkb_file(tmp_path):
    original, feeds = onnx_fixture_models.bfloat16_weights()
    mkb_writer.save(onnx_import.load(original), tmp_path / "bf16.mkb")
    back = mkb_import.load(tmp_path / "bf16.mkb")
    assert back.value("w").dtype == "bfloat16"
    written = onnx_writer.to_proto(back)
    assert written.graph.initializer[0] == original.graph.initializer[0]
    np.testing.assert_array_equal(_run(written, feeds)[0], _run(original, feeds)[0])


def _traced_style_graph():
    g = Graph(opsets={"": 17})
    g.metadata = {"sample": "mlp"}
    x = g.add_input("x", "float32", ("batch", 3))
    w = g.add_initializer("fc.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    h = g.add_node("Gemm", [x, w], attrs={"transB": 1, "alpha": 0.5},
                   module="fc", source="model.py:4").outputs[0]
    h.dtype, h.shape = "float32", ("batch", 2)
    y = g.add_node("Relu", [h], ["y"], module="act", source="model.py:5").outputs[0]
    y.dtype, y.shape = "float32", ("batch", 2)
    g.outputs.append(y)
    return g


def test_mkb_keeps_what_the_onnx_file_needs(tmp_path):
    path = tmp_path / "net.mkb"
    mkb_writer.save(_traced_style_graph(), path)
    back = mkb_import.load(path.read_bytes())
    assert [(n.op_type, n.module, n.source, n.attrs) for n in back.nodes] == [
        ("Gemm", "fc", "model.py:4", {"transB": 1, "alpha": 0.5}), ("Relu", "act", "model.py:5", {})]
    assert [(v.name, v.dtype, v.shape) for v in back.inputs] == [("x", "float32", ("batch", 3))]
    assert back.value("fc/Gemm_output_0").shape == ("batch", 2)
    assert back.metadata == {"sample": "mlp"} and back.opsets == {"": 17}
    np.testing.assert_array_equal(back.value("fc.weight").data, np.arange(6).reshape(2, 3))
    proto = onnx_writer.to_proto(back)
    assert proto.graph.node[0].metadata_props[0].value == "model.py:4"


def test_mkb_writer_is_deterministic(tmp_path):
    mkb_writer.save(_traced_style_graph(), tmp_path / "a.mkb")
    mkb_writer.save(_traced_style_graph(), tmp_path / "b.mkb")
    assert (tmp_path / "a.mkb").read_bytes() == (tmp_path / "b.mkb").read_bytes()
