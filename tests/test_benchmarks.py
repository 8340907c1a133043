"""The benchmark scripts' docstring examples run (each builds a model and times a few calls), so
`make bench` cannot rot unnoticed between benchmark runs. Examples that use PyTorch run only
where it is installed (it is an optional reference, not a dependency)."""

import doctest
import importlib.util
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", ["models", "runtime", "training", "bench"])
def test_docstring_examples(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other by bare name
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    docstrings = doctest.DocTestFinder().find(module)
    if not has_torch():
        docstrings = [d for d in docstrings if not any("torch" in e.source for e in d.examples)]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for docstring in docstrings:
        runner.run(docstring)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0
