"""A small ResNet for the digits upsampled to 32x32: a strided stem, three BasicBlocks (the
last two halve the resolution through a strided conv and a 1x1 conv + BatchNorm shortcut),
global average pooling and a Linear classifier.

Train it with `python samples/resnet_digits/train.py`; `build()` then loads the trained
weights from weights.safetensors next to this file.
"""

from pathlib import Path

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring import nn
from modelkit.authoring.nn import functional as F

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.safetensors"

input_names = ["x"]
dynamic_axes = {"x": {0: "batch"}}


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8) intensities 0..16 -> float32 (N, 1, 32, 32) in [0, 1], each pixel
    repeated into a 4x4 block (nearest-neighbour upsampling)."""
    big = images.repeat(4, axis=1).repeat(4, axis=2)
    return (big[:, None] / 16.0).astype(np.float32)


class BasicBlock(nn.Module):
    """Two 3x3 conv/BatchNorm layers plus the input (torchvision's BasicBlock)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
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
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())      # 16 x 16 x 16
        self.layer1 = BasicBlock(16, 16)                              # 16 x 16 x 16
        self.layer2 = BasicBlock(16, 32, stride=2)                    # 32 x 8 x 8
        self.layer3 = BasicBlock(32, 64, stride=2)                    # 64 x 4 x 4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def make_model() -> nn.Module:
    return ResNet()


def build() -> nn.Module:
    """The model in eval mode, with trained weights when train.py has saved them."""
    model = make_model()
    if WEIGHTS.exists():
        model.load_state_dict(mk.load(WEIGHTS))
    return model.eval()


def example_inputs() -> tuple:
    """Four real test images, preprocessed: a (4, 1, 32, 32) float32 array."""
    with np.load(HERE.parent / "data" / "digits.npz") as data:
        return (preprocess(data["x_test"][:4]),)
