"""The sample models: each builds, runs on its example inputs, and mlp_digits learns the
digits within a few epochs."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import modelkit.authoring as mk

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DIGITS_SAMPLES = ["mlp_digits", "cnn_digits", "resnet_digits", "transformer_digits",
                  "gru_digits"]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", DIGITS_SAMPLES + ["cnn_fashion"])
def test_sample_builds_and_classifies_its_example_inputs(name):
    sample = _load(SAMPLES / name / "model.py", f"sample_{name}")
    model = sample.build()
    assert not model.training
    (x,) = sample.example_inputs()
    assert isinstance(x, np.ndarray) and x.shape[0] == 4
    assert sample.input_names == ["x"] and sample.dynamic_axes == {"x": {0: "batch"}}
    with mk.no_grad():
        logits = model(mk.tensor(x))
    assert logits.shape == (4, 10) and np.isfinite(logits.numpy()).all()


def test_mlp_digits_trains_well_above_chance():
    training = _load(SAMPLES / "training.py", "samples_training")
    sample = _load(SAMPLES / "mlp_digits" / "model.py", "sample_mlp_digits_train")
    result = training.train(sample, epochs=4, lr=1e-2, save=False, show_progress=False)
    assert result["accuracy"] > 0.85, result


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    import gzip
    header = np.array([magic, *array.shape], ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_cnn_fashion_reads_idx_files_and_explains_missing_data(tmp_path):
    sample = _load(SAMPLES / "cnn_fashion" / "model.py", "sample_cnn_fashion_idx")
    sample.DATA_DIR = tmp_path
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        sample.load_data()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", 2051, images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 2049, np.array([9, 0, 4]))
    x_train, y_train, x_test, y_test = sample.load_data()
    np.testing.assert_array_equal(x_train, images)
    assert y_test.tolist() == [9, 0, 4] and y_test.dtype == np.int64
    assert sample.preprocess(x_test).shape == (3, 1, 28, 28)
