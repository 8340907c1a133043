"""The samples on each device: the digits samples train to their accuracy targets (their
train.py hyper-parameters, the shared AdamW + OneCycleLR loop, batches moved with `.to`), and
the edge runtime on the device matches the cpu runtime and eager authoring on every sample model
(plain, with outputs left on the device, and replayed from a CUDA graph)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit import edge_runtime
from modelkit.authoring.utils.data import DataLoader, TensorDataset

from gpu_marks import needs_cuda

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
# sample: (epochs, lr, batch size) from its train.py, and the accuracy its README table reports
DIGITS = {"mlp_digits": ((30, 1e-2, 64), 0.983), "cnn_digits": ((15, 1e-2, 64), 0.994),
          "resnet_digits": ((10, 1e-2, 64), 1.0), "transformer_digits": ((20, 3e-3, 32), 0.953),
          "gru_digits": ((30, 1e-2, 64), 0.986)}
MARGIN = 0.02
"""Accuracy may land this much below the README's figure (a different device's rounding takes
another path through training)."""
TRAINING = [("cpu", "mlp_digits")] + [pytest.param("cuda", name, marks=needs_cuda)
                                      for name in DIGITS]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(sample, device, epochs, lr, batch_size):
    training = _load(SAMPLES / "training.py", "samples_training_for_gpu")
    mk.manual_seed(0)
    x_train, y_train, x_test, y_test = training.load_digits()
    x_train, x_test = sample.preprocess(x_train), sample.preprocess(x_test)
    model = sample.make_model().to(device)
    loader = DataLoader(TensorDataset(mk.tensor(x_train), mk.tensor(y_train)),
                        batch_size=batch_size, shuffle=True,
                        generator=mk.Generator().manual_seed(0))
    optimizer = mk.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = mk.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=len(loader))
    loss_fn = mk.nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            loss = loss_fn(model(images.to(device)), labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with mk.no_grad():
        logits = model(mk.tensor(x_test, device=device))
    assert logits.device == mk.device(device)
    return float((logits.argmax(dim=1).cpu().numpy() == y_test).mean())


@pytest.mark.slow
@pytest.mark.parametrize("device,name", TRAINING)
def test_digits_sample_trains_to_its_accuracy_target(device, name):
    (epochs, lr, batch_size), target = DIGITS[name]
    sample = _load(SAMPLES / name / "model.py", f"gpu_sample_{name}")
    accuracy = _train(sample, device, epochs, lr, batch_size)
    assert accuracy >= target - MARGIN, (name, device, accuracy)


# --- edge runtime -------------------------------------------------------------------------

RUNTIME_SAMPLES = list(DIGITS) + ["cnn_fashion"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{sample: (path of its .mkb, example input, eager authoring output)}, exported once."""
    from modelkit.exporter import export
    folder = tmp_path_factory.mktemp("gpu_samples")
    models = {}
    for name in RUNTIME_SAMPLES:
        sample = _load(SAMPLES / name / "model.py", f"gpu_runtime_{name}")
        model = sample.build()
        (x,) = sample.example_inputs()
        with mk.no_grad():
            eager = model(mk.tensor(x)).numpy()
        path = folder / f"{name}.mkb"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export(model, (mk.tensor(x),), path, input_names=sample.input_names,
                   dynamic_axes=sample.dynamic_axes)
        models[name] = (path, x, eager)
    return models


@pytest.mark.parametrize("name", RUNTIME_SAMPLES)
def test_cpu_runtime_matches_eager_authoring(exported, name):
    path, x, eager = exported[name]
    got = edge_runtime.load(path).run({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), eager, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("name", RUNTIME_SAMPLES)
def test_cuda_runtime_matches_the_cpu_runtime(exported, name):
    import cupy
    path, x, eager = exported[name]
    want = next(iter(edge_runtime.load(path).run({"x": x}).values()))
    session = edge_runtime.load(path, device="cuda")
    got = next(iter(session.run({"x": x}).values()))
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    on_device = next(iter(session.run({"x": cupy.asarray(x)}, device_outputs=True).values()))
    assert isinstance(on_device, cupy.ndarray)
    np.testing.assert_allclose(on_device.get(), want, rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("name", RUNTIME_SAMPLES)
def test_cuda_graph_replays_match_the_cpu_runtime(exported, name):
    path, x, eager = exported[name]
    want = next(iter(edge_runtime.load(path).run({"x": x}).values()))
    session = edge_runtime.load(path, device="cuda", cuda_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sample plans must capture
        for scale in (1.0, 0.5, 1.0):  # replays see each run's feeds
            got = next(iter(session.run({"x": x * np.float32(scale)}).values()))
            expected = want if scale == 1.0 else next(iter(
                edge_runtime.load(path).run({"x": x * np.float32(scale)}).values()))
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert session._graph.graph is not None


@needs_cuda
def test_cuda_graph_falls_back_with_a_warning_when_a_kernel_needs_the_host():
    from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    model = Model(inputs=[ValueInfo("x", "float32", (4,))],
                  outputs=[ValueInfo("y", "int64", (1, "count"))],
                  nodes=[Node("NonZero", ["x"], ["y"])])
    session = edge_runtime.Session(model, device="cuda", cuda_graph=True)
    x = np.array([0, 1, 0, 2], np.float32)
    with pytest.warns(RuntimeWarning, match="could not be captured in a CUDA graph"):
        got = session.run({"x": x})["y"]
    assert got.tolist() == [[1, 3]]
    assert session.run({"x": x})["y"].tolist() == [[1, 3]]  # and keeps working uncaptured


@needs_cuda
def test_checkpoints_move_between_devices_with_map_location(tmp_path):
    model = mk.nn.Linear(3, 2).to("cuda")
    mk.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    loaded = mk.load(tmp_path / "m.safetensors", map_location="cuda")
    assert all(t.device == mk.device("cuda:0") for t in loaded.values())
    fresh = mk.nn.Linear(3, 2)
    fresh.load_state_dict(loaded)  # cuda state into a cpu model
    np.testing.assert_array_equal(fresh.weight.detach().numpy(), model.weight.detach().cpu().numpy())
