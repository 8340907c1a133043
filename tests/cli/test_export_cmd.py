"""`modelkit export model.py` through click's CliRunner."""

from pathlib import Path
import textwrap

import pytest
from click.testing import CliRunner

from modelkit.cli.main import cli

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _model_file(tmp_path, body):
    path = tmp_path / "model.py"
    path.write_text("import numpy as np\nimport modelkit.authoring as mk\n" +
                    textwrap.dedent(body))
    return path


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def test_exports_both_formats_prints_what_it_wrote_and_checks(tmp_path):
    result = _invoke(SAMPLES / "cnn_digits" / "model.py", "-o", tmp_path, "--check")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.mkb").is_file()
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'model.onnx'} (") and lines[0].endswith("KiB)")
    assert lines[1].startswith(f"wrote {tmp_path / 'model.mkb'} (")
    assert "ops (Conv 3, Relu 3, MaxPool 2" in lines[2] and lines[2].endswith("opset 17")
    assert "inputs:  x float32[batch, 1, 8, 8]" in lines
    assert "outputs: output float32[batch, 10]" in lines
    assert any(line.startswith("check onnxruntime:") and "(ok," in line for line in lines)
    assert any(line.startswith("check edge runtime:") and "(ok," in line for line in lines)


def test_format_opset_and_no_optimize(tmp_path):
    result = _invoke(SAMPLES / "cnn_digits" / "model.py", "-o", tmp_path, "--format", "onnx",
                     "--opset", "13", "--no-optimize")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    assert "BatchNormalization 3" in result.output and "opset 13" in result.output


@pytest.mark.parametrize("body, expected", [
    ("def example_inputs():\n    return (np.ones(2, np.float32),)\n",
     "has no build(): define build() returning the model"),
    ("def build():\n    return mk.nn.ReLU()\n", "has no example_inputs()"),
    ("raise RuntimeError('the weights file is missing here')\n",
     "importing it failed: RuntimeError: the weights file is missing here"),
    ("def build():\n    return mk.nn.ReLU()\ndef example_inputs():\n    return (1.5,)\n",
     "example input 0 is a float"),
])
def test_a_bad_model_file_exits_2_with_one_line(tmp_path, body, expected):
    path = _model_file(tmp_path, body)
    result = _invoke(path)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.count("\n") == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[1].startswith("hint: ")


def test_debug_shows_the_traceback(tmp_path):
    path = _model_file(tmp_path, "raise RuntimeError('boom')\n")
    result = CliRunner().invoke(cli, ["export", str(path), "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.stderr and "boom" in result.stderr


def test_check_mismatch_exits_1(tmp_path):
    # forward draws fresh noise at every call: the export bakes one draw in, eager uses another
    path = _model_file(tmp_path, """
        class Noisy(mk.nn.Module):
            def forward(self, x):
                return x + mk.rand(2)
        def build():
            return Noisy()
        def example_inputs():
            return (np.zeros(2, np.float32),)
        """)
    result = _invoke(path, "--check")
    assert result.exit_code == 1
    assert "(MISMATCH," in result.output
