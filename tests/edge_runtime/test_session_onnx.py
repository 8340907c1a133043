"""Models built with onnx.helper (a small conv net, an MLP, an LSTM) run through ONNX -> `read_onnx`
-> `.mkb` bytes -> `load` and match onnxruntime within 1e-5 relative; `load_onnx` gives the same."""

from __future__ import annotations

import numpy as np
import pytest

from modelkit import edge_runtime
from modelkit.edge_runtime.format.onnx_reader import read_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)


def _init(name, *shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_net():
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w"], ["c2"], strides=[2, 2], group=2, kernel_shape=[3, 3]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fcw", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    inits = [_init("c1w", 4, 1, 3, 3), _init("c1b", 4), _init("bn_s", 4), _init("bn_b", 4),
             _init("bn_m", 4), numpy_helper.from_array(RNG.uniform(0.5, 2, 4).astype(np.float32), "bn_v"),
             _init("c2w", 8, 2, 3, 3), _init("fcw", 10, 8), _init("fcb", 10)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])
    return _model(nodes, [x], [y], inits), {"x": RNG.standard_normal((3, 1, 16, 16)).astype(np.float32)}


def mlp():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], alpha=0.5, beta=2.0),
        helper.make_node("Tanh", ["z"], ["t"]),
        helper.make_node("LogSoftmax", ["t"], ["y"], axis=1),
    ]
    inits = [_init("w1", 20, 32), _init("b1", 32), _init("w2", 32, 5), _init("b2", 5)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 20])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])
    return _model(nodes, [x], [y], inits), {"x": RNG.standard_normal((7, 20)).astype(np.float32)}


def lstm():
    hidden, features = 6, 4
    nodes = [
        helper.make_node("LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["ys", "y_h", "y_c"], hidden_size=hidden),
        helper.make_node("Squeeze", ["ys", "axis1"], ["seq"]),
        helper.make_node("MatMul", ["seq", "proj"], ["y"]),
    ]
    inits = [_init("w", 1, 4 * hidden, features), _init("r", 1, 4 * hidden, hidden),
             _init("b", 1, 8 * hidden), _init("proj", hidden, 3),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", "batch", features]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", hidden]),
              helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "batch", hidden])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["seq", "batch", 3]),
               helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [1, "batch", hidden]),
               helper.make_tensor_value_info("y_c", TensorProto.FLOAT, [1, "batch", hidden])]
    feeds = {"x": RNG.standard_normal((5, 2, features)).astype(np.float32),
             "h0": RNG.standard_normal((1, 2, hidden)).astype(np.float32),
             "c0": RNG.standard_normal((1, 2, hidden)).astype(np.float32)}
    return _model(nodes, inputs, outputs, inits), feeds


MODELS = {"conv_net": conv_net, "mlp": mlp, "lstm": lstm}


def _onnxruntime(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _assert_matches(got, expected):
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()),
                                   err_msg=name)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_helper_model_through_mkb_matches_onnxruntime(name):
    model, feeds = MODELS[name]()
    sess = edge_runtime.load(edge_runtime.format.write(read_onnx(model)))
    _assert_matches(sess.run(feeds), _onnxruntime(model, feeds))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_load_onnx_reads_a_file_and_matches_onnxruntime(name, tmp_path):
    model, feeds = MODELS[name]()
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    _assert_matches(edge_runtime.load_onnx(path).run(feeds), _onnxruntime(model, feeds))
