"""Each command through click's CliRunner: output, files written, exit codes, error lines."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli.main import cli
from modelkit.edge_runtime.kernels import registry

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "converters" / "fixtures"
MLP = FIXTURES / "torch_mlp.onnx"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and lines[-1].startswith("hint: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", ["convert", "run", "check", "inspect", "bench", "demo"])
def test_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example: modelkit " + command in result.output


def test_convert_prints_sizes_and_quantization(tmp_path):
    result = invoke("convert", MLP, tmp_path / "m.mkb", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    first, _, third = result.output.splitlines()
    assert first.startswith(f"{MLP} (9.8 KiB) -> {tmp_path / 'm.mkb'} (") and "x smaller" in first
    assert third.startswith("quantized 2 weight tensor(s) to int8:")
    assert (tmp_path / "m.mkb").is_file()


def test_run_with_input_files_and_outputs_saved(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", MLP, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz",
                    "--profile", tmp_path / "trace.json")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("y: float32[3, 10] min ")
    import onnxruntime

    expected = onnxruntime.InferenceSession(str(MLP)).run(None, {"x": x})[0]
    with np.load(tmp_path / "out.npz") as saved:
        np.testing.assert_allclose(saved["y"], expected, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]


def test_run_random_with_symbolic_dim():
    result = invoke("run", MLP, "--random", "--dim", "batch=5")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("y: float32[5, 10]")


def test_run_without_inputs_is_a_usage_error():
    result = invoke("run", MLP)
    assert result.exit_code == 2 and "--random" in result.output


def test_check_passes_and_writes_junit(tmp_path):
    result = invoke("check", MLP, "--dim", "batch=2", "--quantize", "fp16", "--junit", tmp_path / "r.xml")
    assert result.exit_code == 0, result.output
    assert "edge runtime fp16" in result.output and result.output.rstrip().endswith("PASS")
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"


def test_check_mismatch_exits_1_and_names_the_node(tmp_path, monkeypatch):
    right = registry._KERNELS[("", "Gemm")][-1]
    monkeypatch.setitem(registry._KERNELS, ("", "Gemm"), [registry.KernelEntry(
        lambda xp, *a, **k: (right.fn(xp, *a, **k)[0] + 1,), 1)])
    result = invoke("check", MLP, "--junit", tmp_path / "r.xml")
    assert result.exit_code == 1
    assert "first divergent node: '/0/Gemm' (Gemm)" in result.output
    assert ET.parse(tmp_path / "r.xml").getroot().find("testsuite").get("failures") == "1"


def test_check_inputs_npz(tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((7, 64), np.float32))
    result = invoke("check", MLP, "--inputs", tmp_path / "in.npz")
    assert result.exit_code == 0 and "inputs x [7, 64]" in result.output


def test_inspect_text_and_json(tmp_path):
    text = invoke("inspect", FIXTURES / "sklearn_logistic_regression.onnx")
    assert text.exit_code == 0, text.output
    assert "producer: skl2onnx" in text.output and "ai.onnx.ml::LinearClassifier 1" in text.output
    as_json = invoke("inspect", MLP, "--json")
    info = json.loads(as_json.output)
    assert info["ops"] == {"Gemm": 2, "Relu": 1} and info["parameters"] == 2410


def test_bench_json_vs_onnxruntime():
    result = invoke("bench", MLP, "--batch", "2", "--warmup", "1", "--iters", "3",
                    "--vs-onnxruntime", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [s["runtime"] for s in data["stats"]] == ["edge runtime", "onnxruntime"]
    assert data["ratio"] > 0 and data["inputs"] == {"x": [2, 64]}


def test_bench_table():
    result = invoke("bench", MLP, "--iters", "2", "--warmup", "0", "--vs-onnxruntime")
    assert result.exit_code == 0, result.output
    assert "edge runtime / onnxruntime (p50):" in result.output


def test_demo_runs_end_to_end(tmp_path):
    result = invoke("demo", "--epochs", "2", "--iters", "5", "--output-dir", tmp_path)
    assert result.exit_code == 0, result.output
    for step in ("1. train", "2. export", "3. check", "4. edge runtime", "5. quantize", "6. latency"):
        assert step in result.output
    assert {p.name for p in tmp_path.iterdir()} >= {"cnn_digits.onnx", "cnn_digits.mkb",
                                                    "cnn_digits_int8.mkb"}


# -- errors: one line and a hint, exit code 2, no traceback ------------------------------------


def test_missing_file(tmp_path):
    assert_one_line_error(invoke("run", tmp_path / "nope.mkb", "--random"), "no such file")
    assert_one_line_error(invoke("inspect", tmp_path / "nope.onnx"), "no such file")
    assert_one_line_error(invoke("check", tmp_path / "nope.onnx"), "no such file")


def test_wrong_suffix(tmp_path):
    assert_one_line_error(invoke("convert", MLP, tmp_path / "m.pt"), "unknown model suffix '.pt'")
    assert_one_line_error(invoke("bench", tmp_path / "m.tflite"), "expected .onnx or .mkb")


def test_corrupt_model(tmp_path):
    (tmp_path / "bad.mkb").write_bytes(b"MKB1" + b"\xff" * 60)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert_one_line_error(invoke("run", tmp_path / "bad.mkb", "--random"))
    assert_one_line_error(invoke("inspect", tmp_path / "bad.mkb"))
    assert_one_line_error(invoke("convert", tmp_path / "bad.onnx", tmp_path / "m.mkb"))


def test_unknown_input_name(tmp_path):
    np.save(tmp_path / "z.npy", np.ones((1, 64), np.float32))
    result = invoke("run", MLP, "--input", f"z={tmp_path / 'z.npy'}")
    assert_one_line_error(result, "no input 'z'", "['x']")


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("inspect", tmp_path / "nope.onnx", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_check_of_a_model_py_without_build(tmp_path):
    (tmp_path / "model.py").write_text("x = 1\n")
    assert_one_line_error(invoke("check", tmp_path / "model.py"), "build()")


def test_commands_of_other_owners_stay_registered():
    assert {"export", "serve", "convert", "run", "check", "inspect", "bench", "demo"} <= set(cli.commands)
