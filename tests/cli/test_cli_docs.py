"""The docstring examples of the CLI's own modules run."""

import doctest
import importlib

import pytest

MODULES = ["modelkit.cli.errors", "modelkit.cli.output", "modelkit.cli.run_cmd"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
