"""Weight quantization: the arithmetic against numpy written here, the runtime's dequantization
through real .mkb files, and the cnn_digits acceptance figures (accuracy and size)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from modelkit import edge_runtime
from modelkit.converters import onnx_import
from modelkit.converters.convert import convert
from modelkit.converters.errors import ConversionError
from modelkit.converters.quantize import quantize, quantize_int8, to_onnx_nodes
from modelkit.exporter import mkb_writer, onnx_writer
from modelkit.exporter.ir import Graph

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)


def test_int8_per_channel_matches_the_formula():
    w = RNG.standard_normal((4, 3, 2, 2)).astype(np.float32) * np.float32([[[[1]]], [[[10]]], [[[0.1]]], [[[0]]]])
    q, params = quantize_int8(w, 0)
    peaks = np.array([np.abs(w[c]).max() for c in range(4)])
    expected_scale = np.where(peaks > 0, peaks / 127, 1).astype(np.float32)
    np.testing.assert_allclose(params.scale, expected_scale, rtol=1e-6)
    assert q.dtype == np.int8 and params.axis == 0 and not params.zero_point.any()
    for c in range(4):
        np.testing.assert_array_equal(q[c], np.clip(np.round(w[c] / expected_scale[c]), -127, 127))
    # every channel uses the full range, so the error is at most half a step per channel
    error = np.abs(q * params.scale.reshape(-1, 1, 1, 1) - w)
    assert np.all(error <= params.scale.reshape(-1, 1, 1, 1) / 2 + 1e-7)


def _matmul_gemm_graph():
    g = Graph()
    x = g.add_input("x", "float32", ("n", 8))
    w1 = g.add_initializer("w1", RNG.standard_normal((8, 16)).astype(np.float32))
    w2 = g.add_initializer("w2", RNG.standard_normal((8, 16)).astype(np.float32))
    b2 = g.add_initializer("b2", RNG.standard_normal(8).astype(np.float32))
    h = g.add_node("MatMul", [x, w1], ["h"]).outputs[0]
    y = g.add_node("Gemm", [h, w2, b2], ["y"], {"transB": 1}).outputs[0]
    h.dtype, h.shape, y.dtype, y.shape = "float32", ("n", 16), "float32", ("n", 8)
    g.outputs.append(y)
    return g


@pytest.mark.parametrize("mode, stored", [("int8", "int8"), ("fp16", "float16")])
def test_runtime_dequantizes_a_quantized_mkb_at_load(tmp_path, mode, stored):
    graph = _matmul_gemm_graph()
    x = RNG.standard_normal((5, 8)).astype(np.float32)
    expected = edge_runtime.Session(graph.to_model()).run({"x": x})["y"]
    report = quantize(graph, mode)
    mkb_writer.save(graph, tmp_path / "q.mkb")
    stored_model = edge_runtime.format.read(tmp_path / "q.mkb")
    assert stored_model.initializers["w1"].dtype == np.dtype(stored)

    def real(name):  # dequantized independently: (q - zero_point) * scale along the axis
        q, params = stored_model.initializers[name], stored_model.quantization[name]
        shape = [1] * q.ndim
        if params.axis is not None:
            shape[params.axis] = -1
        return (q.astype(np.float32) - params.zero_point.astype(np.float32).reshape(shape)) \
            * params.scale.reshape(shape)

    oracle = (x @ real("w1")) @ real("w2").T + stored_model.initializers["b2"]
    got = edge_runtime.load(tmp_path / "q.mkb").run({"x": x})["y"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, oracle, rtol=1e-5, atol=1e-4)
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()
    quantized = ("w1", "w2")
    assert report.tensors == 2 and report.bytes_before == 4 * (8 * 16 + 8 * 16)
    assert report.bytes_after == sum(stored_model.initializers[n].nbytes
                                     + stored_model.quantization[n].scale.nbytes for n in quantized)


def test_int8_axis_follows_gemm_transb_and_matmul_columns():
    graph = _matmul_gemm_graph()
    quantize(graph, "int8")
    assert graph.value("w1").quantization.axis == 1  # MatMul (K, N): one scale per column
    assert graph.value("w2").quantization.axis == 0  # Gemm transB=1 (N, K): one per row
    assert graph.value("b2").quantization is None    # biases stay float32


def test_quantized_graph_as_onnx_runs_in_onnxruntime_like_the_mkb(tmp_path):
    import onnxruntime

    graph = _matmul_gemm_graph()
    quantize(graph, "int8")
    mkb_writer.save(graph, tmp_path / "q.mkb")
    to_onnx_nodes(graph)
    onnx_writer.save(graph, tmp_path / "q.onnx")
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    options = onnxruntime.SessionOptions()
    # NOTE: onnxruntime's own optimizer may turn DequantizeLinear + MatMul into an integer matmul
    # that also quantizes the activations; the check is of the graph's plain meaning
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort = onnxruntime.InferenceSession(str(tmp_path / "q.onnx"), options,
                                       providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ort.run(None, {"x": x})[0],
                               edge_runtime.load(tmp_path / "q.mkb").run({"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_gru_weights_are_quantized_per_gate_row():
    hidden, features = 4, 3
    w = RNG.standard_normal((1, 3 * hidden, features)).astype(np.float32)
    r = RNG.standard_normal((1, 3 * hidden, hidden)).astype(np.float32)
    node = helper.make_node("GRU", ["x", "W", "R"], ["", "h"], hidden_size=hidden)
    proto = helper.make_model(helper.make_graph(
        [node], "gru", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, features])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 2, hidden])],
        [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
         helper.make_tensor("R", TensorProto.FLOAT, r.shape, r.ravel())]),
        opset_imports=[helper.make_opsetid("", 17)])
    graph = onnx_import.load(proto)
    x = RNG.standard_normal((5, 2, features)).astype(np.float32)
    expected = edge_runtime.Session(graph.to_model()).run({"x": x})["h"]
    assert quantize(graph, "int8").tensors == 2
    assert graph.value("W").quantization.scale.shape == (3 * hidden,)
    got = edge_runtime.Session(graph.to_model()).run({"x": x})["h"]
    assert np.abs(got - expected).max() < 0.05


def test_fp16_keeps_values_float16_cannot_hold_in_float32():
    g = Graph()
    x = g.add_input("x", "float32", (256,))
    mask = g.add_initializer("mask", np.full(256, -1e9, np.float32))
    g.outputs.append(g.add_node("Add", [x, mask], ["y"]).outputs[0])
    assert quantize(g, "fp16").tensors == 0 and mask.dtype == "float32"


def test_unknown_mode_is_refused():
    with pytest.raises(ConversionError, match="unknown quantization 'int4'"):
        quantize(Graph(), "int4")


@pytest.fixture(scope="module")
def cnn_digits(tmp_path_factory):
    """cnn_digits with its committed trained weights, exported to .mkb, and the test set."""
    sys.path.insert(0, str(ROOT / "samples" / "cnn_digits"))
    try:
        import model as sample
    finally:
        sys.path.pop(0)
    from modelkit.exporter import export

    folder = tmp_path_factory.mktemp("cnn_digits")
    export(sample.build(), sample.example_inputs(), folder / "cnn.mkb",
           input_names=sample.input_names, dynamic_axes=sample.dynamic_axes)
    with np.load(ROOT / "samples" / "data" / "digits.npz") as data:
        return folder, sample.preprocess(data["x_test"]), data["y_test"]


def _accuracy(path, x, y):
    return float(np.mean(edge_runtime.load(path).run({"x": x})["output"].argmax(1) == y))


@pytest.mark.parametrize("mode, max_drop_points, min_weight_ratio, min_file_ratio",
                         [("int8", 1.0, 3.9, 3.0), ("fp16", 0.2, 1.95, 1.8)])
def test_cnn_digits_accuracy_and_size(cnn_digits, mode, max_drop_points, min_weight_ratio,
                                      min_file_ratio):
    folder, x, y = cnn_digits
    result = convert(folder / "cnn.mkb", folder / f"cnn_{mode}.mkb", quantize=mode)
    drop = 100 * (_accuracy(folder / "cnn.mkb", x, y) - _accuracy(folder / f"cnn_{mode}.mkb", x, y))
    assert drop <= max_drop_points
    assert result.quantization.bytes_before / result.quantization.bytes_after >= min_weight_ratio
    # NOTE: the file also holds ~6 KB of graph structure that quantization cannot shrink
    assert result.bytes_before / result.bytes_after >= min_file_ratio
