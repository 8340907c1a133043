"""The tracer: TracerWarning at the user's line for Python conversions of traced tensors, module
paths from the module stack, constants from Python values."""

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring.tensor import Tensor
from modelkit.exporter import TracerWarning, export
from modelkit.exporter.trace import CONSTRUCTED_AT, construction_sites, user_source

THIS_FILE = str(Path(__file__).resolve())
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _line_of(text):
    lines = Path(THIS_FILE).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line and "_line_of" not in line)


CONVERSIONS = {
    "bool()": lambda x: x * 2 if bool(x.sum() > 0) else x,  # conversion: bool()
    "float()": lambda x: x * float(x.mean()),  # conversion: float()
    "int()": lambda x: x * int(x.sum()),  # conversion: int()
    ".item()": lambda x: x + x.max().item(),  # conversion: .item()
    ".tolist()": lambda x: x + x.sum().tolist(),  # conversion: .tolist()
    ".numpy()": lambda x: x + float(x.numpy()[0]),  # conversion: .numpy()
    "a boolean mask index": lambda x: x[x > 1.5] * 2,  # conversion: a boolean mask index
}


@pytest.mark.parametrize("how", sorted(CONVERSIONS))
def test_converting_a_traced_tensor_warns_once_at_the_users_line(how):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(CONVERSIONS[how], mk.tensor([1.0, 2.0]))
    tracer_warnings = [w for w in caught if issubclass(w.category, TracerWarning)]
    assert len(tracer_warnings) == 1, [str(w.message) for w in tracer_warnings]
    warning = tracer_warnings[0]
    line = _line_of(f"# conversion: {how}")
    assert (warning.filename, warning.lineno) == (THIS_FILE, line)
    message = str(warning.message)
    assert f"{THIS_FILE}:{line}" in message and how in message
    assert "always take this branch / use this value" in message


def test_conversions_of_weights_and_constants_do_not_warn_and_methods_are_restored():
    layer = mk.nn.Linear(2, 2)

    def model(x):
        return layer(x) * float(layer.weight.abs().max()) + mk.tensor(3.0).item()

    originals = {name: Tensor.__dict__[name] for name in ("item", "__bool__", "numpy")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TracerWarning)
        export(model, mk.ones(1, 2))
    assert {name: Tensor.__dict__[name] for name in originals} == originals


def test_python_constants_become_initializers_and_fold_away():
    def model(x):
        scale = mk.tensor([1.0, 2.0, 3.0]) * 2  # computed from constants only: folded
        return x * scale + 1

    graph = export(model, mk.ones(2, 3))
    assert [n.op_type for n in graph.nodes] == ["Mul", "Add"]
    np.testing.assert_array_equal(graph.nodes[0].inputs[1].data, [2.0, 4.0, 6.0])


class Block(mk.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = mk.nn.Sequential(mk.nn.Linear(2, 2), mk.nn.Tanh())

    def forward(self, x):
        return self.inner(x) * 2


def test_nested_module_paths_on_nodes():
    model = mk.nn.Sequential(Block(), Block())
    graph = export(model, mk.ones(1, 2))
    assert [(n.op_type, n.module) for n in graph.nodes] == [
        ("Gemm", "0.inner.0"), ("Tanh", "0.inner.1"), ("Mul", "0"),
        ("Gemm", "1.inner.0"), ("Tanh", "1.inner.1"), ("Mul", "1")]


def test_user_source_skips_modelkit_frames():
    here = user_source()  # the line user_source names
    assert here == f"{THIS_FILE}:{_line_of('the line user_source names')}"


class TwoStages(mk.nn.Module):
    def __init__(self):
        super().__init__()
        self.stage = mk.nn.Sequential(mk.nn.Linear(2, 2), mk.nn.Tanh())  # built: stage

    def forward(self, x):
        h = self.stage(x)  # calls: stage
        return h * 2  # scales


def test_nodes_point_at_the_users_forward_line_calling_each_layer():
    graph = export(TwoStages(), mk.ones(1, 2))
    assert [(n.op_type, n.source) for n in graph.nodes] == [
        ("Gemm", f"{THIS_FILE}:{_line_of('# calls: stage')}"),
        ("Tanh", f"{THIS_FILE}:{_line_of('# calls: stage')}"),
        ("Mul", f"{THIS_FILE}:{_line_of('# scales')}")]


def test_a_model_without_user_code_in_forward_points_at_the_export_call():
    model = mk.nn.Sequential(mk.nn.Linear(2, 2), mk.nn.ReLU())
    graph = export(model, mk.ones(1, 2))  # the export call
    assert {n.source for n in graph.nodes} == {f"{THIS_FILE}:{_line_of('# the export call')}"}


def test_construction_sites_name_the_users_constructing_lines():
    with construction_sites():
        model = TwoStages()  # built: model
    assert CONSTRUCTED_AT[model] == f"{THIS_FILE}:{_line_of('# built: model')}"
    for module in (model.stage, model.stage[0], model.stage[1]):
        assert CONSTRUCTED_AT[module] == f"{THIS_FILE}:{_line_of('# built: stage')}"
    outside = mk.nn.ReLU()
    assert outside not in CONSTRUCTED_AT


def test_cli_export_of_a_sequential_sample_points_every_node_into_its_model_py(tmp_path):
    # cnn_digits' model is an nn.Sequential built in model.py: no user code runs in its forward,
    # so each node names the model.py line that constructed its layer
    import onnx
    from click.testing import CliRunner

    from modelkit.cli.main import cli
    from modelkit.edge_runtime.format.reader import read
    from modelkit.exporter.onnx_writer import SOURCE_KEY

    model_py = SAMPLES / "cnn_digits" / "model.py"
    result = CliRunner().invoke(cli, ["export", str(model_py), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    layer_lines = {i for i, line in enumerate(model_py.read_text().splitlines(), 1)
                   if "nn." in line and "(" in line and "def " not in line}
    onnx_sources = [dict((p.key, p.value) for p in n.metadata_props).get(SOURCE_KEY, "")
                    for n in onnx.load(tmp_path / "model.onnx").graph.node]
    mkb_sources = [n.source for n in read(tmp_path / "model.mkb").nodes]
    assert len(onnx_sources) == len(mkb_sources) > 5
    for source in onnx_sources + mkb_sources:
        file, _, line = source.rpartition(":")
        assert Path(file).resolve() == model_py.resolve() and int(line) in layer_lines, source


class PausesMidForward(mk.nn.Module):
    def __init__(self, pause):
        super().__init__()
        self.fc = mk.nn.Linear(2, 2)
        self.pause = pause

    def forward(self, x):
        h = self.fc(x)
        self.pause()
        return h.relu()


def test_an_eager_forward_in_another_thread_during_an_export_is_not_recorded():
    other = mk.nn.Sequential(mk.nn.Linear(2, 3), mk.nn.Tanh())
    x = mk.randn(4, 2)
    result = {}

    def eager_forward():
        with mk.no_grad():
            result["y"] = other(x) * float(x.sum())

    def run_in_another_thread():  # while the export is inside forward
        thread = threading.Thread(target=eager_forward)
        thread.start()
        thread.join()

    with warnings.catch_warnings():
        warnings.simplefilter("error", TracerWarning)
        graph = export(PausesMidForward(run_in_another_thread), mk.ones(1, 2))
    assert [(n.op_type, n.module) for n in graph.nodes] == [("Gemm", "fc"), ("Relu", "")]
    weight, bias = other[0].weight.array, other[0].bias.array
    want = np.tanh(x.array @ weight.T + bias) * x.array.sum()
    np.testing.assert_allclose(result["y"].array, want, rtol=1e-5)
