"""mk.save / mk.load: safetensors round trips, PyTorch-layout checkpoints, bad files."""

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import modelkit.authoring as mk
from modelkit.authoring import nn
from modelkit.authoring.errors import CheckpointError


def test_round_trip_keeps_names_values_and_dtypes(tmp_path):
    state = {"w": mk.randn(3, 4), "n": mk.tensor(7, dtype=mk.int64), "t": mk.randn(4, 3).T,
             "h": mk.ones(2, dtype=mk.float16)}
    path = tmp_path / "state.safetensors"
    mk.save(state, path)
    loaded = mk.load(path)
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy())


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "m.safetensors"
    mk.save({"a": mk.zeros(2)}, path)
    mk.save({"a": mk.ones(2)}, path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert mk.load(path)["a"].tolist() == [1.0, 1.0]


def test_only_flat_tensor_mappings_can_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match="flat mapping of str -> Tensor"):
        mk.save([mk.zeros(1)], tmp_path / "x")
    with pytest.raises(CheckpointError, match="'epoch' \\(int\\)"):
        mk.save({"epoch": 3}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _torch_layout_state(rng):
    """A state dict as PyTorch names and lays it out for the model below (float32, int64)."""
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "0.weight": f(4, 1, 3, 3), "0.bias": f(4),
        "1.weight": f(4), "1.bias": f(4), "1.running_mean": f(4),
        "1.running_var": np.abs(f(4)) + 0.5, "1.num_batches_tracked": np.array(12, np.int64),
        "4.weight": f(3, 4 * 2 * 2), "4.bias": f(3),
    }


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16, 3))


def _numpy_reference(state, x):
    """The model's eval-mode forward written independently in numpy."""
    w, b = state["0.weight"].astype(np.float64), state["0.bias"]
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((x.shape[0], 4, 2, 2))
    for i in range(2):
        for j in range(2):
            patch = padded[:, :, i:i + 3, j:j + 3]
            conv[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    shape = (1, 4, 1, 1)
    norm = (conv - state["1.running_mean"].reshape(shape)) / np.sqrt(
        state["1.running_var"].reshape(shape) + 1e-5)
    act = np.maximum(norm * state["1.weight"].reshape(shape) + state["1.bias"].reshape(shape), 0)
    return act.reshape(len(x), -1) @ state["4.weight"].T + state["4.bias"]


def test_checkpoint_in_pytorch_layout_loads_and_gives_the_same_outputs(tmp_path):
    rng = np.random.default_rng(0)
    state = _torch_layout_state(rng)
    path = tmp_path / "torch_layout.safetensors"
    save_file(state, str(path))
    model = _model()
    model.load_state_dict(mk.load(path))
    assert model[1].num_batches_tracked.item() == 12
    x = rng.standard_normal((5, 1, 2, 2)).astype(np.float32)
    with mk.no_grad():
        ours = model.eval()(mk.tensor(x)).numpy()
    np.testing.assert_allclose(ours, _numpy_reference(state, x), rtol=1e-4, atol=1e-5)


def test_checkpoint_written_by_pytorch_loads_and_matches(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save_file
    torch.manual_seed(0)
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16, 3))
    reference(torch.randn(8, 1, 2, 2))               # move the running statistics
    reference.eval()
    path = tmp_path / "from_torch.safetensors"
    torch_save_file(reference.state_dict(), str(path))
    model = _model()
    model.load_state_dict(mk.load(path))
    x = np.random.default_rng(1).standard_normal((5, 1, 2, 2)).astype(np.float32)
    with mk.no_grad():
        ours = model.eval()(mk.tensor(x)).numpy()
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_our_checkpoint_loads_into_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    model = _model()
    path = tmp_path / "ours.safetensors"
    mk.save(model.state_dict(), path)
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16, 3))
    reference.load_state_dict(load_file(str(path)))


@pytest.mark.parametrize("content", [
    b"",
    b"not a checkpoint at all",
    (10 ** 6).to_bytes(8, "little") + b"{}",
    b"PK\x03\x04 a zip file, like torch.save writes",
])
def test_files_that_are_not_safetensors_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.safetensors is not a readable safetensors"):
        mk.load(path)


def test_truncated_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "t.safetensors"
    mk.save({"w": mk.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        mk.load(path)
