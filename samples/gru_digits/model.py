"""A GRU for the digits: each image is read as 8 time steps (its rows) of 8 features; the
last hidden state goes through a Linear classifier.

Train it with `python samples/gru_digits/train.py`; `build()` then loads the trained weights
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
    """uint8 (N, 8, 8) intensities 0..16 -> float32 (N, 8 steps, 8 features) in [0, 1]."""
    return (images / 16.0).astype(np.float32)


class DigitGRU(nn.Module):
    def __init__(self, hidden_size: int = 64, num_classes: int = 10):
        super().__init__()
        self.gru = nn.GRU(input_size=8, hidden_size=hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        _, h_n = self.gru(x)
        return self.head(h_n[-1])


def make_model() -> nn.Module:
    return DigitGRU()


def build() -> nn.Module:
    """The model in eval mode, with trained weights when train.py has saved them."""
    model = make_model()
    if WEIGHTS.exists():
        model.load_state_dict(mk.load(WEIGHTS))
    return model.eval()


def example_inputs() -> tuple:
    """Four real test images as sequences: a (4, 8, 8) float32 array."""
    with np.load(HERE.parent / "data" / "digits.npz") as data:
        return (preprocess(data["x_test"][:4]),)
