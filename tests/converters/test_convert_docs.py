"""The docstring examples of the converters' command-line library modules run."""

import doctest
import importlib

import pytest

MODULES = ["modelkit.converters.convert", "modelkit.converters.quantize",
           "modelkit.converters.check", "modelkit.converters.describe",
           "modelkit.converters.bench", "modelkit.converters.feeds",
           "modelkit.edge_runtime.dequantize", "modelkit.edge_runtime.kernels.ml"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
