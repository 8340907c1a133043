"""Load-time fusion (edge_runtime/fusion.py) and Split by slicing: fused plans give the unfused
plan's and onnxruntime's outputs; a fusion never swallows a value someone else can see."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelkit.edge_runtime import load, load_onnx
from modelkit.edge_runtime import plan as plan_module
from modelkit.edge_runtime.kernels import shape as shape_kernels

RNG = np.random.default_rng(0)


def _onnx_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _scalars(**values):
    return [(name, np.float32(v)) for name, v in values.items()]


def _gelu_nodes(order):
    """The Erf GELU of x into y, as the exporters write it."""
    if order == "modelkit":  # Mul(x, 1/sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5
        return [helper.make_node("Mul", ["x", "inv_sqrt2"], ["s"]),
                helper.make_node("Erf", ["s"], ["e"]),
                helper.make_node("Add", ["e", "one"], ["a"]),
                helper.make_node("Mul", ["x", "a"], ["m"]),
                helper.make_node("Mul", ["m", "half"], ["y"])]
    if order == "torch":  # Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5
        return [helper.make_node("Div", ["x", "sqrt2"], ["s"]),
                helper.make_node("Erf", ["s"], ["e"]),
                helper.make_node("Add", ["one", "e"], ["a"]),
                helper.make_node("Mul", ["a", "x"], ["m"]),
                helper.make_node("Mul", ["half", "m"], ["y"])]
    assert order == "half_first"  # (0.5 * x) * (1 + erf(x / sqrt 2))
    return [helper.make_node("Mul", ["x", "half"], ["h"]),
            helper.make_node("Div", ["x", "sqrt2"], ["s"]),
            helper.make_node("Erf", ["s"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]),
            helper.make_node("Mul", ["h", "a"], ["y"])]


GELU_CONSTANTS = _scalars(inv_sqrt2=math.sqrt(0.5), sqrt2=math.sqrt(2), one=1.0, half=0.5)


def _gelu_reference(x):
    erf = np.vectorize(math.erf)
    return x.astype(np.float64) * 0.5 * (1 + erf(x.astype(np.float64) / math.sqrt(2)))


def _unfused(monkeypatch):
    monkeypatch.setattr(plan_module, "find_fusions", lambda model, excluded: {})


def _fused_op_types(session):
    return sorted(f.op_types for f in session._plan.fusions.values())


def _ort(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("order, fused", [
    ("modelkit", "Mul+Erf+Add+Mul+Mul"), ("torch", "Div+Erf+Add+Mul+Mul"),
    ("half_first", "Mul+Div+Erf+Add+Mul")])
def test_gelu_fuses_in_every_exporter_order_and_matches_unfused_and_onnxruntime(
        order, fused, monkeypatch):
    proto = _onnx_model(_gelu_nodes(order), [("x", [3, 50])], ["y"], GELU_CONSTANTS)
    x = (RNG.standard_normal((3, 50)) * 3).astype(np.float32)
    session = load_onnx(proto, profile=True)
    assert _fused_op_types(session) == [fused] and len(session._plan.steps) == 1
    y = session.run({"x": x})["y"]
    assert y.dtype == np.float32
    (expected,) = _ort(proto, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, _gelu_reference(x), rtol=1e-5, atol=1e-6)
    (record,) = session.profile()
    assert (record.node, record.op_type) == (session._plan.labels[4], fused)  # the last node
    _unfused(monkeypatch)
    unfused = load_onnx(proto)
    assert len(unfused._plan.steps) == 5
    np.testing.assert_allclose(y, unfused.run({"x": x})["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seen", ["e", "a", "m"])
def test_gelu_does_not_fuse_when_an_intermediate_is_a_graph_output(seen):
    proto = _onnx_model(_gelu_nodes("modelkit"), [("x", [4])], ["y", seen], GELU_CONSTANTS)
    session = load_onnx(proto)
    assert _fused_op_types(session) == []
    x = np.float32([-2, -0.5, 0.5, 3])
    got = session.run({"x": x})
    for name, expected in zip(["y", seen], _ort(proto, {"x": x})):
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6)


def test_gelu_does_not_fuse_when_an_intermediate_has_another_reader():
    nodes = _gelu_nodes("torch") + [helper.make_node("Neg", ["e"], ["z"])]
    proto = _onnx_model(nodes, [("x", [4])], ["y", "z"], GELU_CONSTANTS)
    session = load_onnx(proto)
    assert _fused_op_types(session) == []
    x = np.float32([-2, -0.5, 0.5, 3])
    y, z = _ort(proto, {"x": x})
    got = session.run({"x": x})
    np.testing.assert_allclose(got["y"], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["z"], z, rtol=1e-5, atol=1e-6)


def test_gelu_does_not_fuse_with_other_constants():
    constants = _scalars(inv_sqrt2=0.7, sqrt2=math.sqrt(2), one=1.0, half=0.5)
    proto = _onnx_model(_gelu_nodes("modelkit"), [("x", [4])], ["y"], constants)
    session = load_onnx(proto)
    assert _fused_op_types(session) == []
    x = np.float32([-2, -0.5, 0.5, 3])
    np.testing.assert_allclose(session.run({"x": x})["y"], _ort(proto, {"x": x})[0], rtol=1e-5)


@pytest.mark.parametrize("x_shape, bias_shape", [
    ((5, 6), (4,)), ((2, 5, 6), (4,)), ((2, 5, 6), (1, 4)), ((6,), (4,)), ((6,), (1, 4)),
    ((3, 6), (1,))])
def test_matmul_bias_fuses_and_matches_unfused_and_onnxruntime(x_shape, bias_shape, monkeypatch):
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    b = RNG.standard_normal(bias_shape).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]),
             helper.make_node("Add", ["b", "t"], ["y"], name="bias")]
    proto = _onnx_model(nodes, [("x", list(x_shape))], ["y"], [("w", w), ("b", b)])
    x = RNG.standard_normal(x_shape).astype(np.float32)
    session = load_onnx(proto, profile=True)
    assert _fused_op_types(session) == ["MatMul+Add"]
    y = session.run({"x": x})["y"]
    (expected,) = _ort(proto, {"x": x})
    assert y.shape == expected.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w + b, rtol=1e-5, atol=1e-5)
    (record,) = session.profile()
    assert (record.node, record.op_type) == ("bias", "MatMul+Add")
    assert record.input_shapes == (x_shape, (6, 4), bias_shape)
    _unfused(monkeypatch)
    np.testing.assert_array_equal(load_onnx(proto).run({"x": x})["y"], y)


@pytest.mark.parametrize("case", ["product_is_output", "product_read_twice", "bias_is_input",
                                  "bias_too_wide"])
def test_matmul_bias_does_not_fuse(case):
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    initializers = [("w", w), ("b", np.float32([[1, 2, 3, 4], [5, 6, 7, 8]]) if case == "bias_too_wide"
                               else np.float32([1, 2, 3, 4]))]
    inputs = [("x", [2, 6])] + ([("b", [4])] if case == "bias_is_input" else [])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])]
    outputs = ["y"]
    if case == "product_is_output":
        outputs.append("t")
    if case == "product_read_twice":
        nodes.append(helper.make_node("Relu", ["t"], ["z"]))
        outputs.append("z")
    if case == "bias_is_input":
        initializers = initializers[:1]
    proto = _onnx_model(nodes, inputs, outputs, initializers)
    session = load_onnx(proto)
    assert _fused_op_types(session) == []
    feeds = {"x": RNG.standard_normal((2, 6)).astype(np.float32)}
    if case == "bias_is_input":
        feeds["b"] = np.float32([1, 2, 3, 4])
    got = session.run(feeds)
    for name, expected in zip(outputs, _ort(proto, feeds)):
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-5)


def test_fused_step_failure_names_the_fused_inputs():
    w = np.ones((6, 4), np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]),
             helper.make_node("Add", ["t", "b"], ["y"], name="bias")]
    session = load_onnx(_onnx_model(nodes, [("x", None)], ["y"], [("w", w), ("b", np.ones(4))]))
    with pytest.raises(Exception, match=r"node 'bias' \(Add\) failed.*\n  inputs: x: float32\[2, 5\], "
                                        r"w: float32\[6, 4\], b: float32\[4\]"):
        session.run({"x": np.ones((2, 5), np.float32)})


def test_exported_transformer_fuses_and_matches_unfused_and_onnxruntime(tmp_path, monkeypatch):
    import modelkit.authoring as mk
    from modelkit.authoring import nn
    from modelkit.exporter import export

    mk.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Linear(16, 3)).eval()
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    export(model, mk.tensor(x), tmp_path / "t.onnx", input_names=["x"], output_names=["y"])
    export(model, mk.tensor(x), tmp_path / "t.mkb", input_names=["x"], output_names=["y"])
    session = load(tmp_path / "t.mkb")
    fused = _fused_op_types(session)
    assert fused.count("MatMul+Add") >= 8 and fused.count("Mul+Erf+Add+Mul+Mul") == 2
    y = session.run({"x": x})["y"]
    (expected,) = _ort(onnx.load(tmp_path / "t.onnx"), {"x": x})
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    _unfused(monkeypatch)
    unfused = load(tmp_path / "t.mkb")
    assert unfused._plan.fusions == {}
    np.testing.assert_allclose(y, unfused.run({"x": x})["y"], rtol=1e-5, atol=1e-6)


# --- Split by basic slicing --------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, sizes", [
    ((7, 3), 0, [2, 5]), ((2, 9, 3), 1, [3, 3, 3]), ((2, 9, 3), -2, [0, 4, 5]), ((4, 6), -1, [6])])
def test_split_sizes_give_views_equal_to_np_split(shape, axis, sizes):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    parts = shape_kernels.split(np, x, np.int64(sizes), axis=axis, n_outputs=len(sizes))
    expected = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    assert len(parts) == len(expected)
    for got, want in zip(parts, expected):
        assert got.shape == want.shape and np.shares_memory(got, x) == (want.size > 0)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dim, parts, expected", [(7, 3, [3, 3, 1]), (6, 3, [2, 2, 2]), (5, 2, [3, 2])])
def test_split_num_outputs_has_an_uneven_last_chunk(dim, parts, expected):
    x = np.arange(dim * 2, dtype=np.float32).reshape(2, dim)
    got = shape_kernels.split(np, x, axis=1, num_outputs=parts, n_outputs=parts)
    assert [p.shape[1] for p in got] == expected
    np.testing.assert_array_equal(np.concatenate(got, axis=1), x)


def test_split_attribute_and_equal_parts_before_opset_13():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    a, b = shape_kernels.split_attribute(np, x, axis=1, split=[1, 5], n_outputs=2)
    np.testing.assert_array_equal(a, x[:, :1])
    np.testing.assert_array_equal(b, x[:, 1:])
    assert [p.shape for p in shape_kernels.split_attribute(np, x, n_outputs=2)] == [(1, 6), (1, 6)]


@pytest.mark.parametrize("sizes, axis, message", [
    ([2, 3], 1, "sum to dim 1"), ([5, -1], 1, "sum to dim 1"), ([4], 2, "axis 2 is out of range")])
def test_split_refuses_sizes_that_do_not_cover_the_axis(sizes, axis, message):
    from modelkit.edge_runtime.errors import KernelError

    with pytest.raises(KernelError, match=message):
        shape_kernels.split(np, np.zeros((2, 4)), np.int64(sizes), axis=axis, n_outputs=len(sizes))
