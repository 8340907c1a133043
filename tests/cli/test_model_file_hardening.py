"""model.py files that hang, exit or break their own error messages: `modelkit export` and
`modelkit check` exit 2 with one readable line (regressions found by tests/fuzz)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from modelkit.cli.main import cli

VALID = """
def build():
    return mk.nn.Linear(3, 2)
def example_inputs():
    return (np.ones((1, 3), np.float32),)
"""


def _model_file(tmp_path, body):
    path = tmp_path / "model.py"
    path.write_text("import sys, time\nimport numpy as np\nimport modelkit.authoring as mk\n"
                    + textwrap.dedent(body))
    return path


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [l for l in result.output.splitlines() if l.startswith("error: ")]
    return line


@pytest.mark.parametrize("command", ["export", "check"])
@pytest.mark.parametrize("body, where", [
    ("while True:\n    pass\n" + VALID, "import"),
    (VALID.replace("return mk.nn.Linear(3, 2)", "while True:\n        time.sleep(0.01)"), "build"),
    # The user's own `except Exception` around the loop must not swallow the timeout.
    (VALID.replace("return mk.nn.Linear(3, 2)",
                   "while True:\n        try:\n            time.sleep(1)\n"
                   "        except Exception:\n            pass"), "build"),
])
def test_timeout_stops_a_model_py_that_never_finishes(tmp_path, command, body, where):
    path = _model_file(tmp_path, body)
    start = time.monotonic()
    result = CliRunner().invoke(cli, [command, str(path), "--timeout", "0.5"])
    assert time.monotonic() - start < 20
    assert "took longer than 0.5 s (--timeout)" in _error_line(result), where


def test_no_timeout_means_no_limit_and_a_quick_model_is_unaffected(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(_model_file(tmp_path, VALID)), "-o",
                                      str(tmp_path / "out"), "--timeout", "60"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.mkb").is_file()


@pytest.mark.parametrize("body, words", [
    ("sys.exit(3)\n" + VALID, "importing it failed: SystemExit: 3"),
    ("exit()\n" + VALID, "importing it failed: SystemExit"),
    (VALID.replace("return mk.nn.Linear(3, 2)", "raise SystemExit('bye')"),
     "build() raised SystemExit: bye"),
    ("class Weird(Exception):\n    def __str__(self):\n        return 1 / 0\n"
     "raise Weird()\n" + VALID, "importing it failed: Weird: (its message cannot be shown)"),
])
def test_model_py_that_exits_or_breaks_its_message_exits_2(tmp_path, body, words):
    result = CliRunner().invoke(cli, ["export", str(_model_file(tmp_path, body))])
    assert words in _error_line(result)


def test_timeout_must_be_positive(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(_model_file(tmp_path, VALID)),
                                      "--timeout", "0"])
    assert result.exit_code == 2 and "--timeout" in result.output


def test_timeout_in_a_real_process_exits_2(tmp_path):
    path = _model_file(tmp_path, "while True:\n    pass\n" + VALID)
    done = subprocess.run([sys.executable, "-c", "from modelkit.cli.main import cli; cli()",
                           "export", str(path), "--timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: exporting ") and "Traceback" not in done.stderr
