"""The docstring examples of the tracer, `export`, the module lowerings, the model-file loader and
the passes run."""

import doctest
import importlib

import pytest

MODULES = ["modelkit.exporter.trace", "modelkit.exporter.export", "modelkit.exporter.model_file",
           "modelkit.exporter.passes", "modelkit.exporter.passes.constant_folding",
           "modelkit.exporter.passes.cleanup", "modelkit.exporter.passes.batchnorm_folding",
           "modelkit.exporter.module_lowering"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
