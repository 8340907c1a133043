"""ai.onnx.ml kernels against onnx's reference evaluator, through whole one-node models."""

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from modelkit.edge_runtime import load_onnx

ML = "ai.onnx.ml"
RNG = np.random.default_rng(0)


def one_node_model(op, attrs, inputs, outputs, initializers=()):
    node = helper.make_node(op, [name for name, _, _ in inputs] + [t.name for t in initializers],
                            [name for name, _, _ in outputs], domain=ML, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(ML, 1)])


def assert_matches_reference(model, feeds):
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = load_onnx(model).run(feeds)
    for out, want in zip(model.graph.output, expected):
        have = got[out.name]
        assert have.shape == want.shape, out.name
        if want.dtype.kind in "OSU":
            assert have.tolist() == want.tolist()
        else:
            assert have.dtype == want.dtype, out.name
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
def test_linear_classifier_multiclass(post_transform):
    model = one_node_model(
        "LinearClassifier",
        dict(coefficients=RNG.standard_normal(12).tolist(), intercepts=[0.1, -0.2, 0.3],
             classlabels_ints=[4, 5, 6], post_transform=post_transform),
        [("x", TensorProto.FLOAT, [None, 4])],
        [("label", TensorProto.INT64, [None]), ("scores", TensorProto.FLOAT, [None, 3])])
    assert_matches_reference(model, {"x": RNG.standard_normal((7, 4)).astype(np.float32)})


@pytest.mark.parametrize("post_transform", ["NONE", "LOGISTIC"])
def test_linear_classifier_binary_with_one_score_column(post_transform):
    model = one_node_model(
        "LinearClassifier",
        dict(coefficients=[1.0, -2.0], intercepts=[0.5], classlabels_ints=[0, 1],
             post_transform=post_transform),
        [("x", TensorProto.FLOAT, [None, 2])],
        [("label", TensorProto.INT64, [None]), ("scores", TensorProto.FLOAT, [None, 2])])
    assert_matches_reference(model, {"x": RNG.standard_normal((9, 2)).astype(np.float32)})


def test_linear_classifier_string_labels():
    model = one_node_model(
        "LinearClassifier",
        dict(coefficients=[1.0, 0.0, 0.0, 1.0], classlabels_strings=["cat", "dog"]),
        [("x", TensorProto.FLOAT, [None, 2])],
        [("label", TensorProto.STRING, [None]), ("scores", TensorProto.FLOAT, [None, 2])])
    got = load_onnx(model).run({"x": np.float32([[1, 0], [0, 1]])})
    assert got["label"].tolist() == ["cat", "dog"]


def test_linear_regressor_two_targets():
    model = one_node_model(
        "LinearRegressor", dict(coefficients=RNG.standard_normal(6).tolist(),
                                intercepts=[1.0, -1.0], targets=2),
        [("x", TensorProto.FLOAT, [None, 3])], [("y", TensorProto.FLOAT, [None, 2])])
    assert_matches_reference(model, {"x": RNG.standard_normal((5, 3)).astype(np.float32)})


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm):
    model = one_node_model("Normalizer", dict(norm=norm), [("x", TensorProto.FLOAT, [None, 4])],
                           [("y", TensorProto.FLOAT, [None, 4])])
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    x[0] = 0  # an all-zero row stays zero instead of dividing by zero
    assert_matches_reference(model, {"x": x})


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)])
def test_array_feature_extractor(shape):
    indices = helper.make_tensor("idx", TensorProto.INT64, [2], [4, 1])
    model = one_node_model("ArrayFeatureExtractor", {}, [("x", TensorProto.FLOAT, list(shape))],
                           [("y", TensorProto.FLOAT, None)], [indices])
    assert_matches_reference(model, {"x": RNG.standard_normal(shape).astype(np.float32)})


def test_array_feature_extractor_index_out_of_range_names_the_node():
    from modelkit.edge_runtime import KernelError

    indices = helper.make_tensor("idx", TensorProto.INT64, [1], [9])
    model = one_node_model("ArrayFeatureExtractor", {}, [("x", TensorProto.FLOAT, [2, 5])],
                           [("y", TensorProto.FLOAT, None)], [indices])
    with pytest.raises(KernelError, match="ArrayFeatureExtractor.*out of range"):
        load_onnx(model).run({"x": np.zeros((2, 5), np.float32)})


def test_label_encoder_table_is_built_at_load_and_bad_attributes_are_refused_there():
    from modelkit.edge_runtime import Session
    from modelkit.edge_runtime.errors import ModelFormatError
    from modelkit.edge_runtime.format.model import Model, Node, ValueInfo

    def model(attrs):
        return Model(inputs=[ValueInfo("x", "int64", (3,))], outputs=[ValueInfo("y", "string", (3,))],
                     nodes=[Node("LabelEncoder", ["x"], ["y"], attrs=attrs, domain="ai.onnx.ml",
                                 name="enc")], opsets={"": 17, "ai.onnx.ml": 2})

    session = Session(model({"keys_int64s": [3, 1], "values_strings": ["c", "a"]}))
    assert session.run({"x": np.array([1, 2, 3])})["y"].tolist() == ["a", "_Unused", "c"]
    with pytest.raises(ModelFormatError, match="node 'enc'.*exactly one keys_\\* and one values_\\*"):
        Session(model({"keys_int64s": [1, 2]}))
