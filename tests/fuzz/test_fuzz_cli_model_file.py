"""Fuzz target: `modelkit export` and `modelkit check` loading a user's model.py.

Generated model.py files raise at import or in build() / example_inputs() (exceptions of every
kind, including SystemExit and exceptions whose own str() raises), have syntax errors, define
the wrong things (not callables, wrong return values, wrong input_names / dynamic_axes), or
define everything right. Each run must exit 0 with the files written, or exit 2 with one
`error: ...` line and a hint: never a traceback, never another exit code.
"""

from __future__ import annotations

import textwrap

from click.testing import CliRunner
from hypothesis import event, given, strategies as st

from fuzz_settings import fuzz, wall_clock_limit

from modelkit.cli.main import cli

CASE_SECONDS = 30
HEADER = "import sys\nimport numpy as np\nimport modelkit.authoring as mk\n"
RAISES = [
    "raise ValueError('bad value')",
    "sys.exit(3)",
    "exit()",
    "raise SystemExit('bye')",
    "import no_such_module_here",
    "1 / 0",
    "raise type('Weird', (Exception,), {'__str__': lambda self: 1 / 0})()",
    "raise RecursionError('deep')",
    "def f(): f()\nf()",
    "raise MemoryError()",
]
BUILDS = [
    "return mk.nn.Sequential(mk.nn.Linear(3, 2), mk.nn.ReLU())",
    "return mk.nn.Linear(3, 2)",
    "return None",
    "return 42",
    "return 'a model'",
    "return np.ones(3)",
    "return lambda x: x",
    "return mk.nn.Linear",
]
INPUTS = [
    "return (np.ones((1, 3), np.float32),)",
    "return np.ones((1, 3), np.float32)",
    "return [np.ones((1, 3), np.float32)]",
    "return (np.ones((1, 3), np.float64),)",
    "return (np.ones((0, 3), np.float32),)",
    "return (np.ones((1, 4), np.float32),)",
    "return ('text',)",
    "return None",
    "return {'x': np.ones((1, 3), np.float32)}",
    "return (np.ones((1, 3), np.int64),)",
    "return ()",
]
EXTRAS = [
    "",
    "input_names = ['x']",
    "input_names = 'x'",
    "input_names = [1, 2, 3]",
    "output_names = ['y', 'z', 'w']",
    "dynamic_axes = {'x': {0: 'batch'}}",
    "dynamic_axes = {'x': {7: 'batch'}}",
    "dynamic_axes = {'nope': {0: 'batch'}}",
    "dynamic_axes = ['x']",
    "dynamic_axes = {'x': 'batch'}",
    "build = 3",
    "example_inputs = None",
    "def (:",
]


def _mostly_first(options):
    """The first (valid) option half of the time, else any: valid files must come up often."""
    return st.just(options[0]) | st.sampled_from(options)


@st.composite
def model_files(draw):
    lines = [HEADER]
    if draw(st.integers(0, 5)) == 0:
        lines.append(draw(st.sampled_from(RAISES)))
    body = draw(st.sampled_from(RAISES)) if draw(st.integers(0, 5)) == 0 else \
        draw(_mostly_first(BUILDS))
    lines.append("def build():\n" + textwrap.indent(body, "    "))
    body = draw(st.sampled_from(RAISES)) if draw(st.integers(0, 5)) == 0 else \
        draw(_mostly_first(INPUTS))
    lines.append("def example_inputs():\n" + textwrap.indent(body, "    "))
    lines.extend(draw(st.lists(_mostly_first(EXTRAS), max_size=2)))
    return "\n".join(lines) + "\n"


def assert_clean_exit(result, folder, expect_files):
    event(f"exit code {result.exit_code}")
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2) if expect_files else result.exit_code in (0, 1, 2), \
        result.output
    if result.exit_code == 2:
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and len(errors[0]) > len("error: ") + 10, result.output
        assert any(line.startswith("hint: ") for line in result.output.splitlines())
    elif expect_files:
        assert {p.name for p in folder.iterdir()} >= {"model.mkb", "model.onnx"}, result.output


@fuzz(150, deadline_ms=None)
@given(model_files())
def test_export_of_any_model_py_exits_0_or_2_with_one_line(tmp_path_factory, source):
    folder = tmp_path_factory.mktemp("m")
    (folder / "model.py").write_text(source)
    out = folder / "out"
    with wall_clock_limit(CASE_SECONDS):
        result = CliRunner().invoke(cli, ["export", str(folder / "model.py"), "-o", str(out),
                                          "--timeout", "20"])
    assert_clean_exit(result, out, expect_files=True)


@fuzz(50, deadline_ms=None)
@given(model_files())
def test_check_of_any_model_py_exits_0_1_or_2_with_one_line(tmp_path_factory, source):
    folder = tmp_path_factory.mktemp("m")
    (folder / "model.py").write_text(source)
    with wall_clock_limit(CASE_SECONDS):
        result = CliRunner().invoke(cli, ["check", str(folder / "model.py"), "--timeout", "20"])
    assert_clean_exit(result, folder, expect_files=False)
