"""The four benchmark architectures of the performance table, built with `mk.nn`, and their
PyTorch twins (same layout, same parameter names, so one state dict loads into both).

| name        | architecture                                                         | input       |
|-------------|----------------------------------------------------------------------|-------------|
| mlp         | 784-512-512-10, ReLU                                                 | (N, 784)    |
| cnn         | conv3x3(1->32,p1) ReLU pool2 conv3x3(32->64,p1) ReLU pool2 FC128 FC10 | (N,1,28,28) |
| resnet18    | torchvision ResNet-18 layout, 10 classes                             | (N,3,64,64) |
| transformer | tokens+positions d=128 seq 64, 2 pre-LN layers (4 heads, ff 512, GELU), LN, mean, FC10 | (N,64) int64 |

Example:
    >>> m = build("cnn")
    >>> tuple(m(mk.tensor(example_input("cnn", 2))).shape)
    (2, 10)
    >>> round(parameter_count(m) / 1e6, 2)
    0.42
"""

from __future__ import annotations

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring import nn

VOCAB, SEQ, D_MODEL = 1000, 64, 128

SAMPLE_SHAPES = {"mlp": (784,), "cnn": (1, 28, 28), "resnet18": (3, 64, 64),
                 "transformer": (SEQ,)}
MFLOP_PER_SAMPLE = {"mlp": 1.3, "cnn": 8.5, "resnet18": 296.0, "transformer": 55.0}
"""Multiply-adds counted twice, as in the issue's table (used for achieved GFLOP/s)."""


def example_input(name: str, batch: int, seed: int = 1) -> np.ndarray:
    """A batch of inputs for model `name`: float32 normal noise, or int64 tokens.

    Example:
        >>> example_input("transformer", 2).dtype
        dtype('int64')
    """
    rng = np.random.default_rng(seed)
    shape = (batch,) + SAMPLE_SHAPES[name]
    if name == "transformer":
        return rng.integers(0, VOCAB, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def example_labels(batch: int, seed: int = 2) -> np.ndarray:
    """int64 class labels in [0, 10).

    Example:
        >>> example_labels(3).shape
        (3,)
    """
    return np.random.default_rng(seed).integers(0, 10, size=batch, dtype=np.int64)


def parameter_count(model) -> int:
    """Number of scalar parameters of an mk.nn (or torch.nn) model.

    Example:
        >>> parameter_count(build("mlp"))
        669706
    """
    return int(sum(int(np.prod(tuple(p.shape))) for p in model.parameters()))


def _definitions(nn, functional, mean_tokens):
    """The four model classes written once against an nn namespace (mk.nn or torch.nn)."""

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512),
                                        nn.ReLU(), nn.Linear(512, 10))

        def forward(self, x):
            return self.layers(x)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(),
                                            nn.Linear(128, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class BasicBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.downsample = None
            if stride != 1 or in_channels != out_channels:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = functional.relu(self.bn1(self.conv1(x)))
            return functional.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)
            widths, stages, channels = (64, 128, 256, 512), [], 64
            for i, width in enumerate(widths):
                stride = 1 if i == 0 else 2
                stages.append(nn.Sequential(BasicBlock(channels, width, stride),
                                            BasicBlock(width, width, 1)))
                channels = width
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, D_MODEL)
            self.positions = nn.Parameter(_position_init(nn))
            layer = nn.TransformerEncoderLayer(D_MODEL, 4, 512, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(D_MODEL)
            self.head = nn.Linear(D_MODEL, 10)

        def forward(self, tokens):
            x = self.encoder(self.tokens(tokens) + self.positions)
            return self.head(mean_tokens(self.norm(x)))

    return {"mlp": MLP, "cnn": CNN, "resnet18": ResNet18, "transformer": Transformer}


def _position_init(nn):
    values = np.random.default_rng(0).standard_normal((1, SEQ, D_MODEL)).astype(np.float32) * 0.02
    if nn is mk.nn:
        return mk.tensor(values)
    import torch

    return torch.from_numpy(values)


MODELS = tuple(SAMPLE_SHAPES)


def build(name: str, seed: int = 0):
    """The mk.nn model `name` ("mlp", "cnn", "resnet18", "transformer") in eval mode.

    Example:
        >>> build("mlp").training
        False
    """
    mk.manual_seed(seed)
    model = _definitions(mk.nn, mk.nn.functional, lambda x: x.mean(1))[name]()
    return model.eval()


def build_torch(name: str, like=None):
    """The PyTorch twin of model `name` (needs torch), in eval mode; with `like` (an mk.nn
    model of the same name) its parameters and buffers are copied in.

    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> m = build("mlp"); t = build_torch("mlp", like=m)
        >>> x = example_input("mlp", 2)
        >>> bool(np.allclose(t(torch.from_numpy(x)).detach().numpy(), m(mk.tensor(x)).detach().numpy(), atol=1e-5))
        True
    """
    import torch

    model = _definitions(torch.nn, torch.nn.functional, lambda x: x.mean(1))[name]()
    if like is not None:
        state = {k: torch.from_numpy(np.array(v.detach().numpy()))
                 for k, v in like.state_dict().items()}
        model.load_state_dict(state)
    return model.eval()
