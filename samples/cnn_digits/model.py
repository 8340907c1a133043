"""A small CNN for the 8x8 digits: two Conv2d/BatchNorm/ReLU stages with MaxPool, then Linear.

Train it with `python samples/cnn_digits/train.py`; `build()` then loads the trained weights
from weights.safetensors next to this file.
"""

from pathlib import Path

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.safetensors"

input_names = ["x"]
dynamic_axes = {"x": {0: "batch"}}


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8) intensities 0..16 -> float32 (N, 1, 8, 8) in [0, 1]."""
    return (images[:, None] / 16.0).astype(np.float32)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),                                   # 32 x 4 x 4
        nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2),                                   # 64 x 2 x 2
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(64 * 2 * 2, 10),
    )


def build() -> nn.Module:
    """The model in eval mode, with trained weights when train.py has saved them."""
    model = make_model()
    if WEIGHTS.exists():
        model.load_state_dict(mk.load(WEIGHTS))
    return model.eval()


def example_inputs() -> tuple:
    """Four real test images, preprocessed: a (4, 1, 8, 8) float32 array."""
    with np.load(HERE.parent / "data" / "digits.npz") as data:
        return (preprocess(data["x_test"][:4]),)
