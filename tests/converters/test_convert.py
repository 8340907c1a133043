"""`convert`: .onnx <-> .mkb on models made by other tools (torch.onnx, skl2onnx), checked
against onnxruntime on the original file."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from modelkit import edge_runtime
from modelkit.converters.convert import convert, load_graph, model_format
from modelkit.converters.errors import ConversionError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DIGITS = Path(__file__).resolve().parents[2] / "samples" / "data" / "digits.npz"
RNG = np.random.default_rng(0)


def reference(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def random_input(session, batch=3):
    spec = session.inputs[0]
    shape = [batch if isinstance(d, str) else d for d in spec.shape]
    return {spec.name: RNG.standard_normal(shape).astype(np.float32)}


def assert_same_outputs(got, expected, rtol=1e-4, atol=1e-5):
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("name, optimize", [("torch_mlp", True), ("torch_cnn", True),
                                            ("torch_transformer", False)])
def test_torch_exported_fixture_to_mkb_matches_onnxruntime(tmp_path, name, optimize):
    source = FIXTURES / f"{name}.onnx"
    result = convert(source, tmp_path / "m.mkb", optimize=optimize)
    session = edge_runtime.load(tmp_path / "m.mkb")
    feeds = random_input(session)
    assert_same_outputs(session.run(feeds), reference(source, feeds))
    assert result.bytes_after == (tmp_path / "m.mkb").stat().st_size


def test_torch_transformer_optimized(tmp_path):
    # regression: constant folding once turned torch's 0-d Gather indices into 1-D arrays, so the
    # attention's Unsqueeze -> Concat -> Reshape shape arithmetic got a rank-2 shape
    source = FIXTURES / "torch_transformer.onnx"
    convert(source, tmp_path / "m.mkb")
    session = edge_runtime.load(tmp_path / "m.mkb")
    feeds = random_input(session)
    assert_same_outputs(session.run(feeds), reference(source, feeds))


@pytest.mark.parametrize("name", ["sklearn_mlp_classifier", "torch_transformer"])
def test_exporter_passes_keep_the_declared_outputs_of_imported_files(name):
    # regression: remove_identities left skl2onnx's "probabilities" (an Identity's output, whose
    # input carries no value info in the file) without dtype and shape
    from modelkit.exporter.passes import optimize

    graph = load_graph(FIXTURES / f"{name}.onnx")
    declared = [(v.name, v.dtype, v.shape) for v in graph.outputs]
    optimize(graph, graph.opsets[""])
    assert [(v.name, v.dtype, v.shape) for v in graph.outputs] == declared


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_freshly_exported_torch_model(tmp_path, name):
    pytest.importorskip("torch")
    from torch_models import export

    export(name, tmp_path / "m.onnx")
    convert(tmp_path / "m.onnx", tmp_path / "m.mkb")
    session = edge_runtime.load(tmp_path / "m.mkb")
    feeds = random_input(session, batch=2)
    assert_same_outputs(session.run(feeds), reference(tmp_path / "m.onnx", feeds))


@pytest.mark.parametrize("name", ["sklearn_mlp_regressor", "sklearn_mlp_classifier",
                                  "sklearn_logistic_regression"])
def test_sklearn_fixture_to_mkb_matches_onnxruntime(tmp_path, name):
    source = FIXTURES / f"{name}.onnx"
    convert(source, tmp_path / "m.mkb")
    with np.load(DIGITS) as data:
        feeds = {"X": (data["x_test"].reshape(-1, 64) / 16).astype(np.float32)}
    assert_same_outputs(edge_runtime.load(tmp_path / "m.mkb").run(feeds), reference(source, feeds))


def test_sklearn_model_listing_the_default_opset_twice_is_accepted():
    proto = onnx.load(FIXTURES / "sklearn_logistic_regression.onnx")
    assert [o.domain for o in proto.opset_import].count("") == 2  # as skl2onnx writes it
    onnx.checker.check_model(proto)
    assert load_graph(FIXTURES / "sklearn_logistic_regression.onnx").opsets[""] == 17


def test_freshly_converted_sklearn_models(tmp_path):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    with np.load(DIGITS) as data:
        x = (data["x_train"].reshape(-1, 64) / 16).astype(np.float32)
        y = data["y_train"]
    model = LogisticRegression(max_iter=200).fit(x, y)
    proto = skl2onnx.to_onnx(model, x[:1], options={id(model): {"zipmap": False}})
    onnx.save(proto, tmp_path / "lr.onnx")
    convert(tmp_path / "lr.onnx", tmp_path / "lr.mkb")
    feeds = {"X": x[:50]}
    assert_same_outputs(edge_runtime.load(tmp_path / "lr.mkb").run(feeds),
                        reference(tmp_path / "lr.onnx", feeds))


def test_mkb_back_to_onnx_round_trip(tmp_path):
    convert(FIXTURES / "torch_cnn.onnx", tmp_path / "m.mkb")
    convert(tmp_path / "m.mkb", tmp_path / "back.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "back.onnx"), full_check=True)
    feeds = {"x": RNG.standard_normal((2, 1, 8, 8)).astype(np.float32)}
    assert_same_outputs(reference(tmp_path / "back.onnx", feeds),
                        reference(FIXTURES / "torch_cnn.onnx", feeds))


@pytest.mark.parametrize("mode, node, stored", [("int8", "DequantizeLinear", onnx.TensorProto.INT8),
                                                ("fp16", "Cast", onnx.TensorProto.FLOAT16)])
def test_quantized_mkb_to_onnx_keeps_the_narrow_weights(tmp_path, mode, node, stored):
    convert(FIXTURES / "torch_cnn.onnx", tmp_path / "q.mkb", quantize=mode)
    convert(tmp_path / "q.mkb", tmp_path / "q.onnx")
    proto = onnx.load(tmp_path / "q.onnx")
    assert node in {n.op_type for n in proto.graph.node}
    assert any(t.data_type == stored for t in proto.graph.initializer)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(tmp_path / "q.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {"x": RNG.standard_normal((2, 1, 8, 8)).astype(np.float32)}
    assert_same_outputs(edge_runtime.load(tmp_path / "q.mkb").run(feeds),
                        dict(zip(["y"], session.run(None, feeds))))


def test_opset_conversion_of_onnx_output(tmp_path):
    convert(FIXTURES / "torch_mlp.onnx", tmp_path / "m18.onnx", opset=18)
    proto = onnx.load(tmp_path / "m18.onnx")
    assert {o.domain or "": o.version for o in proto.opset_import}[""] == 18
    feeds = {"x": RNG.standard_normal((2, 64)).astype(np.float32)}
    assert_same_outputs(reference(tmp_path / "m18.onnx", feeds),
                        reference(FIXTURES / "torch_mlp.onnx", feeds))


def test_optimize_folds_batchnorm_of_a_torch_export_in_training_form(tmp_path):
    from onnx import TensorProto, helper

    c = 3
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [c], v) for n, v in
             (("scale", [1, 2, 3]), ("bias", [0, 1, 0]), ("mean", [0.5, 0, 0]), ("var", [1, 4, 9]))]
    w = helper.make_tensor("w", TensorProto.FLOAT, [c, 1, 1, 1], [1, -1, 2])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], group=c),
         helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])],
        "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 2, 2])], [w, *inits])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "bn.onnx")
    optimized = convert(tmp_path / "bn.onnx", tmp_path / "bn.mkb")
    plain = convert(tmp_path / "bn.onnx", tmp_path / "plain.mkb", optimize=False)
    assert optimized.passes["fold_conv_batchnorm"] == 1 and optimized.node_count == 1
    assert plain.passes == {} and plain.node_count == 2
    feeds = {"x": RNG.standard_normal((1, c, 2, 2)).astype(np.float32)}
    assert_same_outputs(edge_runtime.load(tmp_path / "bn.mkb").run(feeds),
                        reference(tmp_path / "bn.onnx", feeds))


def test_wrong_suffix_and_missing_file_are_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"unknown model suffix '\.pt'; expected \.onnx or \.mkb"):
        convert(FIXTURES / "torch_mlp.onnx", tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        convert(tmp_path / "missing.onnx", tmp_path / "m.mkb")
    assert model_format("A.MKB") == "mkb"


def test_unsupported_ops_are_listed_all_at_once(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Foo", ["x"], ["a"], name="first", domain="com.example"),
         helper.make_node("Bar", ["a"], ["y"], name="second", domain="com.example")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]),
              tmp_path / "custom.onnx")
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "custom.onnx", tmp_path / "custom.mkb")
    assert len(error.value.problems) == 2
    assert "'first'" in error.value.problems[0] and "'second'" in error.value.problems[1]


@pytest.mark.parametrize("optimize", [False, True])
def test_string_constants_survive_conversion_and_match_onnxruntime(tmp_path, optimize):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["labels"], value_strings=["cat", "dög"]),
         helper.make_node("Constant", [], ["unit"], value_string="kg"),
         helper.make_node("Relu", ["x"], ["y"])], "strings",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("labels", TensorProto.STRING, [2]),
         helper.make_tensor_value_info("unit", TensorProto.STRING, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    source = tmp_path / "strings.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    convert(source, tmp_path / "strings.mkb", optimize=optimize)
    feeds = {"x": np.array([-1.0, 2.0], np.float32)}
    got = edge_runtime.load(tmp_path / "strings.mkb").run(feeds)
    for name, want in reference(source, feeds).items():
        assert got[name].tolist() == want.tolist(), name
