"""The tracer: TracerWarning at the user's line for Python conversions of traced tensors, module
paths from the module stack, constants from Python values."""

import warnings
from pathlib import Path

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring.tensor import Tensor
from modelkit.exporter import TracerWarning, export
from modelkit.exporter.trace import user_source

THIS_FILE = str(Path(__file__).resolve())


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
