"""Graph passes: each keeps the model's outputs within 1e-5 relative (edge runtime before and
after the pass) and does its rewrite."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit import edge_runtime
from modelkit.exporter.export import trace
from modelkit.exporter.ir import Graph
from modelkit.exporter.passes import PASSES, optimize
from modelkit.exporter.passes.batchnorm_folding import fold_conv_batchnorm
from modelkit.exporter.passes.cleanup import remove_dead_nodes, remove_identities
from modelkit.exporter.passes.constant_folding import fold_constants

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _resnet():
    spec = importlib.util.spec_from_file_location("pass_resnet", SAMPLES / "resnet_digits" /
                                                  "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_model(), (np.random.default_rng(0).random((2, 1, 32, 32), np.float32),)


class MatMulBatchNorm(mk.nn.Module):
    """Linear (Gemm), a hand-written matmul + bias (MatMul + Add), each followed by BatchNorm1d;
    a clone (Identity) and constant arithmetic (folded)."""

    def __init__(self):
        super().__init__()
        self.fc = mk.nn.Linear(4, 5)
        self.bn1 = mk.nn.BatchNorm1d(5)
        self.w = mk.nn.Parameter(mk.randn(5, 3))
        self.b = mk.nn.Parameter(mk.randn(3))
        self.bn2 = mk.nn.BatchNorm1d(3)

    def forward(self, x):
        h = self.bn1(self.fc(x)).clone()
        scale = mk.tensor([1.0, 2.0, 3.0]).exp().sum()
        return self.bn2(h @ self.w + self.b) * scale


def _with_statistics(model):
    mk.manual_seed(3)
    for module in model.modules():
        if isinstance(module, (mk.nn.BatchNorm1d, mk.nn.BatchNorm2d)):
            module.running_mean.copy_(mk.randn(*module.running_mean.shape))
            module.running_var.copy_(mk.rand(*module.running_var.shape) + 0.5)
            module.weight.data.copy_(mk.randn(*module.weight.shape))
    return model.eval()


MODELS = {
    "resnet_digits": _resnet,
    "linear_batchnorm": lambda: (MatMulBatchNorm(), (np.random.default_rng(1).standard_normal(
        (6, 4)).astype(np.float32),)),
}


def _run(graph: Graph, feeds):
    outputs = edge_runtime.Session(graph.to_model()).run(feeds)
    return [outputs[v.name] for v in graph.outputs]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_pass_keeps_outputs_within_1e_5_relative(name):
    model, inputs = MODELS[name]()
    model = _with_statistics(model)
    graph = trace(model, inputs)
    feeds = {v.name: a for v, a in zip(graph.inputs, inputs)}
    before = _run(graph, feeds)
    rewrites = {}
    for pass_name, run in PASSES:
        rewrites[pass_name] = run(graph, 17)
        after = _run(graph, feeds)
        for want, got in zip(before, after):
            error = np.abs(got - want).max() / np.abs(want).max()
            assert error < 1e-5, f"{pass_name} changed {name}'s output by {error:.2g} relative"
    assert "BatchNormalization" not in {n.op_type for n in graph.nodes}
    if name == "linear_batchnorm":
        assert [n.op_type for n in graph.nodes] == ["Gemm", "MatMul", "Add", "Mul"]
        assert rewrites["fold_linear_batchnorm"] == 2 and rewrites["fold_constants"] == 2
        assert rewrites["remove_identities"] == 1 and rewrites["remove_dead_nodes"] > 0
    else:
        assert rewrites["fold_conv_batchnorm"] == 9  # every BatchNorm2d of the ResNet


def test_conv_without_bias_gets_the_folded_bias_named_like_its_weight():
    model, inputs = _resnet()
    graph = trace(_with_statistics(model), inputs)
    optimize(graph, 17)
    stem = next(n for n in graph.nodes if n.op_type == "Conv")
    assert [v.name for v in stem.inputs] == ["x", "stem.0.weight", "stem.0.bias"]


def test_identity_removal_keeps_graph_output_names():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    r = g.add_node("Relu", [x]).outputs[0]
    y = g.add_node("Identity", [r], ["y"]).outputs[0]
    passthrough = g.add_node("Identity", [x], ["x_copy"]).outputs[0]
    for v in (r, y, passthrough):
        v.dtype, v.shape = "float32", (2,)
    g.outputs += [y, passthrough]
    assert remove_identities(g) == 1
    assert [n.op_type for n in g.nodes] == ["Relu", "Identity"]
    assert [v.name for v in g.outputs] == ["y", "x_copy"] and g.nodes[0].outputs[0].name == "y"


def test_dead_nodes_and_unused_weights_are_removed():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    w = g.add_initializer("unused.weight", np.ones(2, np.float32))
    dead = g.add_node("Mul", [x, w]).outputs[0]
    g.add_node("Relu", [dead])
    y = g.add_node("Neg", [x], ["y"]).outputs[0]
    y.dtype, y.shape = "float32", (2,)
    g.outputs.append(y)
    assert remove_dead_nodes(g) == 3
    assert [n.op_type for n in g.nodes] == ["Neg"] and g.initializers == []


def test_constant_folding_keeps_0d_scalars_0d():
    # regression (torch's attention shape arithmetic): a folded 0-d Constant used as a Gather
    # index became 1-D, so Unsqueeze -> Concat gave the Reshape a rank-2 shape
    g = Graph()
    x = g.add_input("x", "float32", ("batch", 6))
    shape = g.add_node("Shape", [x]).outputs[0]
    index = g.add_node("Constant", [], attrs={"value": np.array(0, np.int64)}).outputs[0]
    batch = g.add_node("Gather", [shape, index], attrs={"axis": 0}).outputs[0]
    axes = g.add_initializer("axes", np.array([0], np.int64))
    dim = g.add_node("Unsqueeze", [batch, axes]).outputs[0]
    rest = g.add_initializer("rest", np.array([3, 2], np.int64))
    target = g.add_node("Concat", [dim, rest], attrs={"axis": 0}).outputs[0]
    y = g.add_node("Reshape", [x, target], ["y"]).outputs[0]
    y.dtype, y.shape = "float32", ("batch", 3, 2)
    g.outputs.append(y)
    feeds = {"x": np.arange(30, dtype=np.float32).reshape(5, 6)}
    assert fold_constants(g, 17) == 1
    assert g.nodes[1].op_type == "Gather" and g.nodes[1].inputs[1].data.shape == ()
    np.testing.assert_array_equal(_run(g, feeds)[0], feeds["x"].reshape(5, 3, 2))


def test_identity_removal_gives_the_output_its_declared_dtype_and_shape():
    # an imported file's intermediate values often carry no dtype/shape; the output they now
    # name must keep what the file declared for it (the writers need it)
    g = Graph()
    x = g.add_input("x", "float32", ("batch", 2))
    r = g.add_node("Relu", [x]).outputs[0]
    y = g.add_node("Identity", [r], ["y"]).outputs[0]
    y.dtype, y.shape = "float32", ("batch", 2)
    g.outputs.append(y)
    assert remove_identities(g) == 1
    assert g.outputs[0] is r and (r.name, r.dtype, r.shape) == ("y", "float32", ("batch", 2))
    feeds = {"x": np.array([[-1, 2]] * 3, np.float32)}
    np.testing.assert_array_equal(_run(g, feeds)[0], np.maximum(feeds["x"], 0))


def test_batchnorm_folding_gives_the_output_its_declared_dtype_and_shape():
    g = Graph()
    x = g.add_input("x", "float32", ("batch", 1, 4, 4))
    w = g.add_initializer("conv.weight", np.ones((2, 1, 3, 3), np.float32))
    c = g.add_node("Conv", [x, w]).outputs[0]
    stats = [g.add_initializer(n, np.full(2, v, np.float32)) for n, v in (
        ("bn.weight", 2.0), ("bn.bias", 1.0), ("bn.running_mean", 0.5), ("bn.running_var", 4.0))]
    y = g.add_node("BatchNormalization", [c, *stats], ["y"]).outputs[0]
    y.dtype, y.shape = "float32", ("batch", 2, 2, 2)
    g.outputs.append(y)
    feeds = {"x": np.random.default_rng(0).random((3, 1, 4, 4), np.float32)}
    want = _run(g, feeds)[0]
    assert fold_conv_batchnorm(g) == 1
    assert (c.name, c.dtype, c.shape) == ("y", "float32", ("batch", 2, 2, 2))
    np.testing.assert_allclose(_run(g, feeds)[0], want, rtol=1e-5)
