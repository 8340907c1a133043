"""`modelkit.exporter.export`: samples, dynamic axes, names, provenance, determinism, errors."""

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import modelkit.authoring as mk
from modelkit import edge_runtime
from modelkit.authoring.ops.registry import OPS, apply, primitive
from modelkit.edge_runtime.format.onnx_reader import MODULE_KEY, SOURCE_KEY
from modelkit.exporter import ExportError, export

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE_NAMES = sorted(p.parent.name for p in SAMPLES.glob("*/model.py"))
THIS_FILE = str(Path(__file__).resolve())


def _load_sample(name):
    spec = importlib.util.spec_from_file_location(f"sample_{name}", SAMPLES / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_like(array, batch, rng):
    shape = (batch,) + array.shape[1:]
    if array.dtype.kind in "iu":  # token ids: stay within the values the example uses
        return rng.integers(array.min(), array.max() + 1, shape).astype(array.dtype)
    return rng.standard_normal(shape).astype(array.dtype)


def _eager(model, *arrays):
    with mk.no_grad():
        return model(*[mk.tensor(a) for a in arrays]).array


def _rel_error(got, want):
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_exports_to_both_formats_and_matches_eager_at_three_batch_sizes(name, tmp_path):
    sample = _load_sample(name)
    mk.manual_seed(0)
    model = sample.build()  # freshly initialised when no weights are saved
    example = sample.example_inputs()
    assert sample.dynamic_axes, f"{name}/model.py declares no dynamic axes"
    graph = export(model, example, tmp_path / "m", format="both", input_names=sample.input_names,
                   dynamic_axes=sample.dynamic_axes)
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    ort_session = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                       providers=["CPUExecutionProvider"])
    edge = edge_runtime.load(tmp_path / "m.mkb")
    name_in, name_out = graph.inputs[0].name, graph.outputs[0].name
    rng = np.random.default_rng(1)
    for batch in (1, 7, 64):
        for _ in range(16 if batch == 7 else 2):
            x = _random_like(example[0], batch, rng)
            want = _eager(model, x)
            assert _rel_error(ort_session.run([name_out], {name_in: x})[0], want) < 1e-4
            assert _rel_error(edge.run({name_in: x})[name_out], want) < 1e-4


def test_weights_are_initializers_named_by_state_dict_keys():
    sample = _load_sample("mlp_digits")
    model = sample.build()
    graph = export(model, sample.example_inputs())
    names = {v.name for v in graph.initializers}
    assert names == set(model.state_dict())
    for key, tensor in model.state_dict().items():
        np.testing.assert_array_equal(graph.value(key).data, tensor.array)


def test_one_node_per_layer_that_onnx_has_as_one_op():
    model = mk.nn.Sequential(mk.nn.Conv2d(1, 2, 3), mk.nn.Flatten(), mk.nn.Linear(18, 5),
                             mk.nn.LayerNorm(5))
    graph = export(model, mk.randn(2, 1, 5, 5), optimize=False)
    ops = [n.op_type for n in graph.nodes]
    assert ops.count("Conv") == 1 and ops.count("Gemm") == 1
    assert ops.count("LayerNormalization") == 1 and len(ops) == 4
    three_d = export(mk.nn.Linear(4, 3), mk.randn(2, 5, 4))
    assert [n.op_type for n in three_d.nodes] == ["MatMul", "Add"]


def test_eval_mode_during_tracing_and_training_mode_restored():
    model = mk.nn.Sequential(mk.nn.Linear(4, 4), mk.nn.Dropout(0.5), mk.nn.BatchNorm1d(4))
    model.train()
    graph = export(model, mk.randn(3, 4))
    assert model.training and all(m.training for m in model.modules())
    assert [n.op_type for n in graph.nodes] == ["Gemm"]  # dropout gone, BatchNorm folded


class TwoHeads(mk.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = mk.nn.Linear(4, 6)
        self.head = mk.nn.Linear(6, 2)

    def forward(self, x, bias):
        h = self.body(x).relu() + bias  # line the provenance test looks for
        return {"logits": self.head(h), "hidden": h, "input": x}


def _line_of(text):
    lines = Path(THIS_FILE).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_multiple_inputs_dict_outputs_and_node_provenance(tmp_path):
    model = TwoHeads()
    x, bias = mk.randn(3, 4), mk.randn(6)
    graph = export(model, (x, bias), tmp_path / "m.onnx", format="both")
    assert [v.name for v in graph.inputs] == ["x", "bias"]
    assert [v.name for v in graph.outputs] == ["logits", "hidden", "input"]
    add = next(n for n in graph.nodes if n.op_type == "Add")
    assert add.source == f"{THIS_FILE}:{_line_of('line the provenance test looks for')}"
    assert {n.module for n in graph.nodes if n.op_type == "Gemm"} == {"body", "head"}
    assert all(n.source and n.module is not None for n in graph.nodes if n.op_type != "Identity")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    props = {p.key: p.value for p in gemm.metadata_props}
    assert props[MODULE_KEY] == "body" and props[SOURCE_KEY].startswith(THIS_FILE)
    stored = edge_runtime.format.read(str(tmp_path / "m.mkb"))
    assert [(n.source, n.module) for n in stored.nodes] == [(n.source, n.module)
                                                           for n in graph.nodes]
    outputs = edge_runtime.load(tmp_path / "m.mkb").run({"x": x.array, "bias": bias.array})
    with mk.no_grad():
        want = model(x, bias)
    for key in ("logits", "hidden", "input"):
        np.testing.assert_allclose(outputs[key], want[key].array, rtol=1e-5, atol=1e-6)


class ShapeArithmetic(mk.nn.Module):
    """Every kind of shape arithmetic on a dynamic batch dim."""

    def __init__(self):
        super().__init__()
        self.fc = mk.nn.Linear(12, 3)

    def forward(self, x):
        b = x.shape[0]
        flat = x.view(x.size(0), -1)
        again = x.reshape(b, -1) + flat.flatten(1)
        pairs = x.reshape(-1, 2, 3, 2).sum(dim=1).reshape(b, 6).repeat(1, 2)
        state = mk.zeros(x.size(0), 3)  # a constant that follows the batch: ConstantOfShape
        head = x[: x.size(0) - 1].reshape(b - 1, 12).sum(dim=0, keepdim=True)
        tiled = self.fc(again).expand(x.size(0), 3) + state
        return self.fc(pairs + again) + tiled + self.fc(head)


@pytest.mark.parametrize("opset", [13, 17])
def test_dynamic_axes_shape_arithmetic_runs_at_batch_1_7_64(tmp_path, opset):
    model = ShapeArithmetic()
    graph = export(model, mk.randn(4, 3, 4), tmp_path / "m.onnx", format="both", opset=opset,
                   dynamic_axes={"x": {0: "batch"}})
    assert graph.inputs[0].shape == ("batch", 3, 4) and graph.outputs[0].shape == ("batch", 3)
    assert {"Shape", "Gather", "Concat", "ConstantOfShape"} <= {n.op_type for n in graph.nodes}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    edge = edge_runtime.load(tmp_path / "m.mkb")
    for batch in (1, 7, 64):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4)).astype(np.float32)
        want = _eager(model, x)
        assert _rel_error(session.run(None, {"x": x})[0], want) < 1e-5
        assert _rel_error(edge.run({"x": x})["output"], want) < 1e-5


def _mean_by_size(x):
    return x.sum(dim=0) / x.size(0) + (x.size(0) * 2 + 1)


def test_python_numbers_computed_from_a_dynamic_size_follow_it(tmp_path):
    # regression: they were baked in as the traced size (a mean over batch 7 divided by 2)
    graph = export(_mean_by_size, mk.randn(2, 3), tmp_path / "m.onnx", format="both",
                   dynamic_axes={"x": {0: "batch"}})
    assert graph.initializers and all(v.data.dtype == np.int64 for v in graph.initializers)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    edge = edge_runtime.load(tmp_path / "m.mkb")
    for batch in (1, 7, 64):
        x = np.random.default_rng(batch).standard_normal((batch, 3)).astype(np.float32)
        want = _eager(_mean_by_size, x)
        assert _rel_error(session.run(None, {"x": x})[0], want) < 1e-6
        assert _rel_error(edge.run({"x": x})["output"], want) < 1e-6


def test_a_value_that_follows_a_dynamic_size_non_linearly_is_an_error_naming_the_line():
    def scaled(x):
        return x * (1.0 / x.size(0))  # line of the reciprocal size

    with pytest.raises(ExportError, match=r"holds \[0.5\] here and \[0.25\] at another size"
                       ) as error:
        export(scaled, mk.randn(2, 3), dynamic_axes={"x": {0: "batch"}})
    assert f"{THIS_FILE}:{_line_of('line of the reciprocal size')}" in str(error.value)


def test_a_model_exported_at_batch_1_runs_at_other_sizes_too():
    model = ShapeArithmetic()
    graph = export(model, mk.randn(2, 3, 4), dynamic_axes={"x": [0]})
    session = edge_runtime.Session(graph.to_model())
    x = np.ones((9, 3, 4), np.float32)
    assert session.run({"x": x})["output"].shape == (9, 3)


def test_python_control_flow_on_a_dynamic_size_is_an_error_naming_the_line():
    def unrolled(x):
        total = x[0]
        for i in range(1, x.shape[0]):  # line of the size-dependent loop
            total = total + x[i]
        return total

    with pytest.raises(ExportError, match="different sequence of ops") as error:
        export(unrolled, mk.randn(3, 2), dynamic_axes={"x": {0: "n"}})
    assert f"{THIS_FILE}:{_line_of('total = total + x[i]')}" in str(error.value)


def test_export_is_deterministic_byte_for_byte(tmp_path):
    sample = _load_sample("cnn_digits")
    model = sample.build()
    for run in ("a", "b"):
        export(model, sample.example_inputs(), tmp_path / run / "m", format="both",
               input_names=sample.input_names, dynamic_axes=sample.dynamic_axes)
    for suffix in (".onnx", ".mkb"):
        first = (tmp_path / "a" / f"m{suffix}").read_bytes()
        assert first == (tmp_path / "b" / f"m{suffix}").read_bytes()


def test_format_follows_the_suffix_and_an_unknown_suffix_is_an_error(tmp_path):
    export(mk.nn.ReLU(), mk.randn(2), tmp_path / "r.mkb")
    assert edge_runtime.load(tmp_path / "r.mkb").outputs[0].name == "output"
    with pytest.raises(ExportError, match="end it in .onnx or .mkb"):
        export(mk.nn.ReLU(), mk.randn(2), tmp_path / "r.bin")


def test_op_without_lowering_is_an_error_naming_the_op_and_the_line():
    op = primitive("unlowered_doubling")(lambda xp, x: x * 2)
    try:
        def model(x):
            return apply(op, x) + 1  # line of the unlowered op

        with pytest.raises(ExportError, match="'unlowered_doubling' has no ONNX lowering") as e:
            export(model, mk.randn(2))
        assert f"{THIS_FILE}:{_line_of('line of the unlowered op')}" in str(e.value)
    finally:
        OPS.pop("unlowered_doubling")


def test_non_tensor_input_is_an_error_naming_the_argument():
    with pytest.raises(ExportError, match="example input 1 is a float"):
        export(lambda x, y: x * y, (mk.randn(2), 3.0))


def test_non_tensor_output_is_an_error_naming_the_output_and_forward():
    class ReturnsInt(mk.nn.Module):
        def forward(self, x):
            return x.relu(), 3

    with pytest.raises(ExportError, match=r"returns a int as output\[1\]") as error:
        export(ReturnsInt(), mk.randn(2))
    assert THIS_FILE in str(error.value) and "ReturnsInt.forward" in str(error.value)


def test_output_dynamic_axes_name_the_output_dims():
    graph = export(lambda x: x.sum(dim=1), mk.randn(2, 3),
                   dynamic_axes={"x": {0: "batch"}, "output": {0: "rows"}})
    assert graph.outputs[0].shape == ("rows",)


@pytest.mark.parametrize("axes, message", [
    ({"x": {2: "n"}}, "has 2 dims, so dim 2 does not exist"),
    ({"x": {0: "n"}, "y": {0: "n"}}, "names 'y', which is neither an input"),
    ({"output": {0: "n"}}, "does not follow any dynamic input axis"),
])
def test_bad_dynamic_axes_are_errors(axes, message):
    with pytest.raises(ExportError, match=message):
        export(lambda x: x * 2, mk.randn(2, 3), dynamic_axes=axes)
