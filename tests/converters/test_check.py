"""The conversion check: passing models pass, a planted wrong kernel is caught and named, JUnit
XML reads back, quantized models report top-1 agreement and accuracy change."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, save

from modelkit.converters.check import check, check_model, first_divergence
from modelkit.converters.convert import load_graph
from modelkit.edge_runtime import InvalidInputError
from modelkit.edge_runtime.kernels import registry

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def plant_wrong_kernel(monkeypatch, op_type, factor=1.01):
    """Make the edge runtime's `op_type` kernel scale its first result by `factor`."""
    entries = registry._KERNELS[("", op_type)]
    right = entries[-1]

    def wrong(xp, *inputs, **attrs):
        results = right.fn(xp, *inputs, **attrs)
        return (results[0] * results[0].dtype.type(factor), *results[1:])

    monkeypatch.setitem(registry._KERNELS, ("", op_type),
                        [registry.KernelEntry(wrong, 1, right.wants_n_outputs)])


@pytest.fixture
def chain_onnx(tmp_path):
    """x -> MatMul -> Tanh (node 'squash') -> Mul -> y: the wrong kernel sits mid-graph."""
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="project"),
         helper.make_node("Tanh", ["h"], ["t"], name="squash"),
         helper.make_node("Mul", ["t", "t"], ["y"], name="square")], "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 4], w.ravel())])
    path = tmp_path / "chain.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_correct_model_passes(chain_onnx):
    report = check(chain_onnx, dims={"batch": 3})
    assert report.passed and report.divergence is None
    assert report.inputs == {"x": (3, 4)}
    assert [(c.path, c.output) for c in report.comparisons] == [("edge runtime", "y")]


def test_planted_wrong_kernel_is_named(chain_onnx, monkeypatch):
    plant_wrong_kernel(monkeypatch, "Tanh")
    report = check(chain_onnx)
    assert not report.passed
    assert report.divergence.node == "squash" and report.divergence.op_type == "Tanh"
    assert "first divergent node: 'squash' (Tanh)" in report.table()
    assert report.table().endswith("FAIL")


def test_planted_wrong_kernel_in_an_exported_model_py(monkeypatch):
    plant_wrong_kernel(monkeypatch, "MaxPool")
    report = check(ROOT / "samples" / "cnn_digits" / "model.py")
    assert [(c.path, c.passed) for c in report.comparisons] == [("onnxruntime", True),
                                                                ("edge runtime", False)]
    assert report.divergence.op_type == "MaxPool"
    assert report.divergence.module  # the module path (features index) that produced it
    assert f"'{report.divergence.node}' (MaxPool)" in report.table()


def test_first_divergence_is_none_when_runtimes_agree(chain_onnx):
    graph = load_graph(chain_onnx)
    assert first_divergence(graph, {"x": np.ones((2, 4), np.float32)}) is None


def test_junit_xml_reads_back(chain_onnx, monkeypatch, tmp_path):
    plant_wrong_kernel(monkeypatch, "Tanh")
    report = check(chain_onnx)
    report.write_junit(tmp_path / "report.xml")
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    case = suite.find("testcase")
    assert case.get("name") == "edge runtime: y"
    assert "max abs error" in case.find("failure").get("message")
    assert "'squash'" in case.find("failure").text


def test_model_py_with_quantization_reports_top1_and_accuracy_change():
    with np.load(ROOT / "samples" / "data" / "digits.npz") as data:
        x, y = (data["x_test"][:, None] / 16).astype(np.float32), data["y_test"]
    report = check(ROOT / "samples" / "cnn_digits" / "model.py", inputs={"x": x, "labels": y},
                   quantize="int8")
    assert report.passed
    assert [c.path for c in report.comparisons] == ["onnxruntime", "edge runtime", "edge runtime int8"]
    quantized = report.comparisons[-1]
    assert quantized.top1_agreement >= 0.99 and abs(quantized.accuracy_change) <= 1.0
    assert "accuracy" in report.table()


def test_check_model_in_memory_and_unknown_input():
    import modelkit.authoring as mk

    net = mk.nn.Sequential(mk.nn.Linear(3, 2), mk.nn.Tanh())
    example = (np.ones((2, 3), np.float32),)
    assert check_model(net, example).passed
    with pytest.raises(InvalidInputError, match=r"no input\(s\) \['y'\]; its inputs are"):
        check_model(net, example, inputs={"y": np.ones((2, 3), np.float32)})


def test_mkb_file_is_checked_against_onnxruntime_on_the_same_graph(tmp_path):
    from modelkit.converters.convert import convert

    convert(FIXTURES / "sklearn_mlp_classifier.onnx", tmp_path / "m.mkb", quantize="int8")
    report = check(tmp_path / "m.mkb", dims={"unk__0": 16})
    assert report.passed, report.table()
    assert {c.output for c in report.comparisons} == {"label", "probabilities"}
