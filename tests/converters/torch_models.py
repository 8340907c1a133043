"""Small PyTorch models exported with `torch.onnx.export`, the way users' tools produce ONNX.

Used by the tests (when torch is installed) and to regenerate the committed fixtures:
`python tests/converters/torch_models.py` writes tests/converters/fixtures/torch_*.onnx.
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def build(name: str):
    """(torch module in eval mode, example input, dynamic axes) for "mlp", "cnn", "transformer"."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        example = torch.randn(2, 64)
    elif name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        example = torch.randn(2, 1, 8, 8)
    elif name == "transformer":
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32,
                                           dropout=0.0, batch_first=True)
        model = nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoder(layer, num_layers=1,
                                                                    enable_nested_tensor=False))
        example = torch.randn(2, 5, 8)
    else:
        raise ValueError(f"unknown model {name!r}; expected mlp, cnn or transformer")
    return model.eval(), example


def export(name: str, path) -> None:
    """Export model `name` to `path` with the TorchScript-based exporter (no onnxscript needed),
    opset 17, dynamic batch dim."""
    import torch

    model, example = build(name)
    # NOTE: the fused fast path of TransformerEncoderLayer has no ONNX export
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17,
                          dynamo=False)


if __name__ == "__main__":
    for model_name in ("mlp", "cnn", "transformer"):
        export(model_name, FIXTURES / f"torch_{model_name}.onnx")
