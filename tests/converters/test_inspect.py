"""`describe` (modelkit inspect's library function) on ONNX and .mkb files."""

from pathlib import Path

import pytest

from modelkit.converters.convert import convert
from modelkit.converters.describe import describe
from modelkit.edge_runtime import ModelFormatError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_onnx_from_another_tool():
    info = describe(FIXTURES / "sklearn_logistic_regression.onnx")
    assert info["format"] == "onnx" and info["producer"] == "skl2onnx"
    assert info["opsets"] == {"": 17, "ai.onnx.ml": 1}
    assert info["ops"] == {"ai.onnx.ml::LinearClassifier": 1, "ai.onnx.ml::Normalizer": 1}
    assert [o["name"] for o in info["outputs"]] == ["label", "probabilities"]
    assert info["inputs"][0]["shape"][1] == 64


def test_counts_parameters_and_weight_bytes_of_a_quantized_mkb(tmp_path):
    convert(FIXTURES / "torch_mlp.onnx", tmp_path / "q.mkb", quantize="int8")
    info = describe(tmp_path / "q.mkb")
    assert info["format"] == "mkb" and info["format_version"] == "1.0"
    assert info["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert info["weight_bytes"] == {"int8": 64 * 32 + 32 * 10, "float32": 4 * (32 + 10)}
    assert sorted(q["scales"] for q in info["quantized"].values()) == [10, 32]
    assert info["file_bytes"] == (tmp_path / "q.mkb").stat().st_size


def test_corrupt_file_is_a_format_error(tmp_path):
    (tmp_path / "bad.mkb").write_bytes(b"\x00" * 40)
    with pytest.raises(ModelFormatError):
        describe(tmp_path / "bad.mkb")
