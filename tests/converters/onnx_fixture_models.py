"""Small ONNX models built with onnx.helper, with seeded weights and matching example feeds.

Each builder returns `(model_proto, feeds)`; shared by the converter tests (and usable by any
test that wants a real conv net, MLP or LSTM without shipping files).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _weights(rng, **shapes):
    return [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
            for n, s in shapes.items()]


def _model(nodes, name, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="onnx.helper")


def conv_net(opset=17):
    """Conv -> BatchNorm -> Relu -> MaxPool -> Conv -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    init = _weights(rng, w1=(8, 3, 3, 3), b1=(8,), w2=(16, 8, 3, 3), b2=(16,), fc_w=(10, 16), fc_b=(10,))
    init += [numpy_helper.from_array(np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5, "bn_var"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bn_mean"),
             numpy_helper.from_array(np.ones(8, np.float32), "bn_scale"),
             numpy_helper.from_array(np.zeros(8, np.float32), "bn_bias")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["n1"], name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    model = _model(nodes, "conv_net",
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                   init, opset)
    feeds = {"x": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)}
    return model, feeds


def mlp(opset=17):
    """MatMul+Add -> Tanh -> MatMul+Add -> Softmax, with a dynamic batch dim."""
    rng = np.random.default_rng(1)
    init = _weights(rng, w1=(20, 32), b1=(32,), w2=(32, 5), b2=(5,))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1/matmul"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1/add"),
        helper.make_node("Tanh", ["h1"], ["h2"], name="act"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2/matmul"),
        helper.make_node("Add", ["h3", "b2"], ["h4"], name="fc2/add"),
        helper.make_node("Softmax", ["h4"], ["probs"], name="softmax", axis=-1),
    ]
    model = _model(nodes, "mlp",
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 20])],
                   [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 5])],
                   init, opset)
    feeds = {"x": rng.standard_normal((4, 20)).astype(np.float32)}
    return model, feeds


def lstm(opset=17):
    """One forward LSTM layer with an initial state, an omitted sequence_lens and all three outputs."""
    rng = np.random.default_rng(2)
    hidden, features = 6, 4
    init = _weights(rng, W=(1, 4 * hidden, features), R=(1, 4 * hidden, hidden), B=(1, 8 * hidden))
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0"], ["Y", "Y_h", "Y_c"], name="lstm",
                              hidden_size=hidden)]
    model = _model(nodes, "lstm",
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", "batch", features]),
                    helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", hidden])],
                   [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", 1, "batch", hidden]),
                    helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "batch", hidden]),
                    helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, "batch", hidden])],
                   init, opset)
    feeds = {"x": rng.standard_normal((5, 3, features)).astype(np.float32),
             "h0": rng.standard_normal((1, 3, hidden)).astype(np.float32)}
    return model, feeds


def bfloat16_weights(opset=17):
    """y = x * Cast(w): a bfloat16 initializer (1.0, -2.0, ~0.333) used in float32."""
    bits = np.array([0x3F80, 0xC000, 0x3EAB], np.uint16)
    weight = helper.make_tensor("w", TensorProto.BFLOAT16, [3], bits.tobytes(), raw=True)
    nodes = [helper.make_node("Cast", ["w"], ["wf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "wf"], ["y"], name="mul")]
    model = _model(nodes, "bf16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [weight], opset)
    return model, {"x": np.array([1.0, 2.0, 3.0], np.float32)}


ALL = {"conv_net": conv_net, "mlp": mlp, "lstm": lstm}
