"""The examples in the docstrings of the session modules run and show what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["modelkit.edge_runtime", "modelkit.edge_runtime.session", "modelkit.edge_runtime.plan",
           "modelkit.edge_runtime.graph_check", "modelkit.edge_runtime.input_check",
           "modelkit.edge_runtime.profiling", "modelkit.edge_runtime.memory_report",
           "modelkit.edge_runtime.custom_ops", "modelkit.edge_runtime.fusion",
           "modelkit.edge_runtime.shape_cache", "modelkit.edge_runtime.atomic_file",
           "modelkit.edge_runtime.cuda", "modelkit.edge_runtime.gpu_run",
           "modelkit.edge_runtime.cuda_graph"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
