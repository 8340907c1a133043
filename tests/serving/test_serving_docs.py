"""The docstring examples of the serving modules run and show what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

MODULES = ["codecs", "datatypes", "errors", "inference_app", "management_app", "metrics", "pool",
           "registry", "server", "store", "web", "wire", "worker"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"modelkit.edge_runtime.serving.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
