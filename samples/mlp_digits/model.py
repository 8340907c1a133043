"""A multi-layer perceptron for the 8x8 digits: 64 pixels -> 128 -> 64 -> 10 classes.

Train it with `python samples/mlp_digits/train.py`; `build()` then loads the trained weights
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
    """uint8 (N, 8, 8) intensities 0..16 -> float32 (N, 64) in [0, 1]."""
    return (images.reshape(len(images), 64) / 16.0).astype(np.float32)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def build() -> nn.Module:
    """The model in eval mode, with trained weights when train.py has saved them."""
    model = make_model()
    if WEIGHTS.exists():
        model.load_state_dict(mk.load(WEIGHTS))
    return model.eval()


def example_inputs() -> tuple:
    """Four real test images, preprocessed: a (4, 64) float32 array."""
    with np.load(HERE.parent / "data" / "digits.npz") as data:
        return (preprocess(data["x_test"][:4]),)
