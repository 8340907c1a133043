"""A CNN for Fashion-MNIST (70,000 real 28x28 greyscale photos of clothing in 10 classes,
by Zalando Research, MIT licence): two Conv2d/BatchNorm/ReLU/MaxPool stages, then Linear.

The data is not committed. Install it from Debian/Ubuntu with
    sudo apt-get install dataset-fashion-mnist
which puts the four IDX files in /usr/share/datasets/fashion-mnist/; or download
train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist and point
FASHION_MNIST_DIR at their folder. Then `python samples/cnn_fashion/train.py`.
"""

import gzip
import os
from pathlib import Path

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.safetensors"
DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]

input_names = ["x"]
dynamic_axes = {"x": {0: "batch"}}


def _read_idx(name: str, magic: int, header_ints: int) -> np.ndarray:
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found. Install Fashion-MNIST with `sudo apt-get install "
            "dataset-fashion-mnist`, or download the IDX files from "
            "https://github.com/zalandoresearch/fashion-mnist and set FASHION_MNIST_DIR")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw, ">i4", header_ints)
    if header[0] != magic:
        raise ValueError(f"{path}: not an IDX file (magic {header[0]}, expected {magic})")
    return np.frombuffer(raw, np.uint8, offset=4 * header_ints).reshape(header[1:])


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (60000, 28, 28) uint8, y_train int64, x_test (10000, 28, 28), y_test)."""
    return (_read_idx("train-images-idx3-ubyte.gz", 2051, 4),
            _read_idx("train-labels-idx1-ubyte.gz", 2049, 2).astype(np.int64),
            _read_idx("t10k-images-idx3-ubyte.gz", 2051, 4),
            _read_idx("t10k-labels-idx1-ubyte.gz", 2049, 2).astype(np.int64))


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardised with the training set's
    mean and std (0.286, 0.353)."""
    return ((images[:, None] / 255.0 - 0.286) / 0.353).astype(np.float32)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),                                   # 16 x 14 x 14
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),                                   # 32 x 7 x 7
        nn.Flatten(), nn.Dropout(0.25),
        nn.Linear(32 * 7 * 7, 10),
    )


def build() -> nn.Module:
    """The model in eval mode, with trained weights when train.py has saved them."""
    model = make_model()
    if WEIGHTS.exists():
        model.load_state_dict(mk.load(WEIGHTS))
    return model.eval()


def example_inputs() -> tuple:
    """Four real test images when the dataset is installed, else four seeded random images of
    the same shape: a (4, 1, 28, 28) float32 array."""
    try:
        return (preprocess(_read_idx("t10k-images-idx3-ubyte.gz", 2051, 4)[:4]),)
    except FileNotFoundError:
        return (np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32),)
