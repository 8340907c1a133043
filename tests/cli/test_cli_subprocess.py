"""End to end through the installed `modelkit` script, as a user or CI job runs it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELKIT = Path(sys.executable).parent / "modelkit"


def modelkit(*args, cwd):
    return subprocess.run([str(MODELKIT), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.skipif(not MODELKIT.exists(), reason="the modelkit script is not installed")
def test_convert_check_run_inspect_through_the_script(tmp_path):
    source = ROOT / "tests" / "converters" / "fixtures" / "sklearn_mlp_classifier.onnx"
    converted = modelkit("convert", source, "clf.mkb", "--quantize", "int8", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    with np.load(ROOT / "samples" / "data" / "digits.npz") as data:
        np.save(tmp_path / "X.npy", (data["x_test"][:8].reshape(8, 64) / 16).astype(np.float32))
    ran = modelkit("run", "clf.mkb", "--input", "X=X.npy", "--output", "out.npz", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].startswith("label: int64[8]")
    checked = modelkit("check", "clf.mkb", "--dim", "unk__0=4", "--junit", "r.xml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (tmp_path / "r.xml").read_text().count("<testcase") == 2
    missing = modelkit("inspect", "nope.mkb", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.splitlines() == ["error: nope.mkb: no such file", "hint: check the path"]
