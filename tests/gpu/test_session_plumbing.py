"""The CUDA session's plumbing on a machine without a GPU, through a numpy-backed cupy
stand-in: the plan runs with a non-numpy array module (no numpy-only fast paths), feeds and
outputs go through the GPU paths, and CUDA graph capture falls back with one warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from modelkit import edge_runtime
from modelkit.edge_runtime import cuda
from modelkit.edge_runtime.format.model import Model, Node, ValueInfo

from numpy_cupy import numpy_cupy


def _model() -> Model:
    weight = np.array([[1.0, -1.0], [2.0, 0.5]], np.float32)
    return Model(inputs=[ValueInfo("x", "float32", ("n", 2))],
                 outputs=[ValueInfo("y", "float32", ("n", 2))],
                 nodes=[Node("MatMul", ["x", "w"], ["t"]), Node("Relu", ["t"], ["r"]),
                        Node("Add", ["r", "t"], ["y"])],
                 initializers={"w": weight})


def _expected(x):
    t = x @ np.array([[1.0, -1.0], [2.0, 0.5]], np.float32)
    return np.maximum(t, 0) + t


@pytest.fixture
def fake_cupy(monkeypatch):
    def install(**options):
        module = numpy_cupy(**options)
        monkeypatch.setattr(cuda, "import_cupy", lambda: module)
        monkeypatch.setattr(cuda, "_cupy", None)
        return module
    return install


def test_a_cuda_session_runs_the_plan_with_the_device_array_module(fake_cupy):
    module = fake_cupy()
    session = edge_runtime.Session(_model(), device="cuda:0")
    assert session.xp is module and session.xp is not np
    x = np.array([[1.0, 2.0], [-3.0, 0.5]], np.float32)
    np.testing.assert_allclose(session.run({"x": x})["y"], _expected(x), rtol=1e-6)
    np.testing.assert_allclose(session.run({"x": [[1, 2]]}, device_outputs=True)["y"],
                               _expected(np.array([[1, 2]], np.float32)), rtol=1e-6)
    with pytest.raises(edge_runtime.InvalidInputError, match="input 'x': dim 1 must be 2"):
        session.run({"x": np.zeros((1, 3), np.float32)})


def test_cuda_graph_capture_replays_and_shape_changes_run_uncaptured(fake_cupy):
    module = fake_cupy()
    session = edge_runtime.Session(_model(), device="cuda", cuda_graph=True)
    x = np.array([[1.0, 2.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(session.run({"x": x})["y"], _expected(x), rtol=1e-6)
    (stream,) = module.streams
    (graph,) = stream.graphs
    assert graph.launches == 1 and not stream.capturing
    bigger = np.ones((3, 2), np.float32)
    np.testing.assert_allclose(session.run({"x": bigger})["y"], _expected(bigger), rtol=1e-6)
    assert graph.launches == 1  # other shapes do not replay the captured graph


def test_a_plan_that_cannot_be_captured_warns_once_and_runs_uncaptured(fake_cupy):
    fake_cupy(refuse_capture=RuntimeError("operation not permitted when stream is capturing"))
    session = edge_runtime.Session(_model(), device="cuda", cuda_graph=True)
    x = np.array([[1.0, 2.0]], np.float32)
    with pytest.warns(RuntimeWarning, match=r"could not be captured in a CUDA graph \(RuntimeError: "
                                            r"operation not permitted"):
        np.testing.assert_allclose(session.run({"x": x})["y"], _expected(x), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(session.run({"x": 2 * x})["y"], _expected(2 * x), rtol=1e-6)
