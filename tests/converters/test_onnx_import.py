"""ONNX -> IR -> ONNX: `converters.onnx_import.load` and `exporter.onnx_writer`, checked with
onnxruntime on real models, and every import problem listed in one ConversionError."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelkit.converters import onnx_import
from modelkit.converters.errors import ConversionError
from modelkit.exporter import onnx_writer

import onnx_fixture_models


def _run(model_or_path, feeds):
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("name", sorted(onnx_fixture_models.ALL))
def test_round_trip_keeps_outputs_identical(name, tmp_path):
    original, feeds = onnx_fixture_models.ALL[name]()
    path = tmp_path / f"{name}.onnx"
    onnx_writer.save(onnx_import.load(original), path)
    onnx.checker.check_model(str(path), full_check=True)
    expected, got = _run(original, feeds), _run(path, feeds)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("name", sorted(onnx_fixture_models.ALL))
def test_round_trip_keeps_the_graph(name):
    original, _ = onnx_fixture_models.ALL[name]()
    written = onnx_writer.to_proto(onnx_import.load(original))
    for field in ("input", "output", "node"):
        assert list(getattr(written.graph, field)) == list(getattr(original.graph, field)), field
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in written.graph.initializer} == \
        {t.name: numpy_helper.to_array(t).tobytes() for t in original.graph.initializer}
    assert written.producer_name == original.producer_name


def test_round_trip_is_deterministic_and_a_fixed_point(tmp_path):
    original, _ = onnx_fixture_models.conv_net()
    onnx_writer.save(onnx_import.load(original), tmp_path / "a.onnx")
    onnx_writer.save(onnx_import.load(original), tmp_path / "b.onnx")
    onnx_writer.save(onnx_import.load(tmp_path / "a.onnx"), tmp_path / "c.onnx")
    a = (tmp_path / "a.onnx").read_bytes()
    assert a == (tmp_path / "b.onnx").read_bytes() == (tmp_path / "c.onnx").read_bytes()


def test_external_data_model_imports_and_runs(tmp_path):
    original, feeds = onnx_fixture_models.conv_net()
    expected = _run(original, feeds)
    src = tmp_path / "src" / "net.onnx"
    src.parent.mkdir()
    onnx.save_model(original, src, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="net.weights", size_threshold=0)
    graph = onnx_import.load(src)
    assert graph.value("w1").data.shape == (8, 3, 3, 3)
    out = tmp_path / "out" / "net.onnx"
    out.parent.mkdir()
    onnx_writer.save(graph, out)  # weights inline again: a single self-contained file
    for e, g in zip(expected, _run(out, feeds)):
        np.testing.assert_array_equal(g, e)


def _broken_model():
    """Two unsupported ops, an input nobody produces, and a two-node cycle, in one model."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("FancyOp", ["a"], ["b"], name="fancy", domain="vendor.ops"),
        helper.make_node("Add", ["b", "missing_weight"], ["c"], name="add_missing"),
        helper.make_node("Mul", ["c", "e"], ["d"], name="loop_a"),
        helper.make_node("Neg", ["d"], ["e"], name="loop_b"),
        helper.make_node("NotAnOnnxOp", ["d"], ["y"], name="unknown_op"),
    ]
    graph = helper.make_graph(nodes, "broken",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20),
                                                   helper.make_opsetid("vendor.ops", 1)])


def test_every_problem_is_listed_in_one_error():
    with pytest.raises(ConversionError) as info:
        onnx_import.load(_broken_model())
    problems = info.value.problems
    text = "\n".join(problems)
    assert "'fancy'" in text and "vendor.ops::FancyOp" in text
    assert "'unknown_op'" in text and "NotAnOnnxOp" in text
    assert "'add_missing'" in text and "'missing_weight'" in text
    assert "cycle" in text and "'loop_a'" in text and "'loop_b'" in text
    assert len(problems) == 4
    assert str(info.value).count("\n") == len(problems)  # the message lists them all too


def test_nodes_out_of_order_are_sorted_not_refused():
    original, feeds = onnx_fixture_models.mlp()
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(original)
    nodes = list(shuffled.graph.node)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(reversed(nodes))
    graph = onnx_import.load(shuffled)
    assert [n.name for n in graph.nodes] == [n.name for n in original.graph.node]


def test_old_opset_is_refused_with_the_minimum():
    original, _ = onnx_fixture_models.mlp(opset=11)
    with pytest.raises(ConversionError, match="opset 11.*13 and up") as info:
        onnx_import.load(original)
    assert len(info.value.problems) == 1


def test_unreadable_model_is_a_conversion_error(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07\x12")
    with pytest.raises(ConversionError, match="cannot read the ONNX model"):
        onnx_import.load(path)


def test_graph_attribute_is_a_conversion_error_naming_the_node():
    body = helper.make_graph([], "body", [], [])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(ConversionError, match="'branch'.*GRAPH"):
        onnx_import.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_bfloat16_weights_keep_their_bits_and_type():
    original, feeds = onnx_fixture_models.bfloat16_weights()
    bits = np.array([0x3F80, 0xC000, 0x3EAB], np.uint16)
    graph = onnx_import.load(original)
    w = graph.value("w")
    assert w.dtype == "bfloat16" and w.data.dtype == np.uint16
    np.testing.assert_array_equal(w.data, bits)
    written = onnx_writer.to_proto(graph)
    assert written.graph.initializer[0] == original.graph.initializer[0]
    np.testing.assert_array_equal(_run(written, feeds)[0], _run(original, feeds)[0])
