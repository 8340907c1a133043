"""A Transformer encoder for the digits: each image is a sequence of 64 tokens (its pixel
intensities 0..16 are the vocabulary), embedded with learned positions, two encoder layers,
mean-pooled over the tokens, then a Linear classifier.

Train it with `python samples/transformer_digits/train.py`; `build()` then loads the trained
weights from weights.safetensors next to this file.
"""

from pathlib import Path

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring import nn

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.safetensors"

input_names = ["x"]
dynamic_axes = {"x": {0: "batch"}}

VOCABULARY, TOKENS, WIDTH = 17, 64, 64


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8) intensities 0..16 -> int64 token ids (N, 64), row by row."""
    return images.reshape(len(images), TOKENS).astype(np.int64)


class DigitTransformer(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, WIDTH)
        self.position = nn.Parameter(mk.randn(1, TOKENS, WIDTH))
        layer = nn.TransformerEncoderLayer(WIDTH, nhead=4, dim_feedforward=128, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(WIDTH, num_classes)

    def forward(self, x):
        tokens = self.encoder(self.embed(x) + self.position)
        return self.head(tokens.mean(dim=1))


def make_model() -> nn.Module:
    return DigitTransformer()


def build() -> nn.Module:
    """The model in eval mode, with trained weights when train.py has saved them."""
    model = make_model()
    if WEIGHTS.exists():
        model.load_state_dict(mk.load(WEIGHTS))
    return model.eval()


def example_inputs() -> tuple:
    """Four real test images as token ids: a (4, 64) int64 array."""
    with np.load(HERE.parent / "data" / "digits.npz") as data:
        return (preprocess(data["x_test"][:4]),)
