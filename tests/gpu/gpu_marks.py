"""Device parametrization for the GPU tests: cuda cases skip, with the exact reason, on a
machine without cupy or without a CUDA device."""

from __future__ import annotations

import importlib.util

import pytest

from modelkit.edge_runtime import cuda


def _missing_cuda() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed (pip install 'modelkit[gpu]')"
    if cuda.device_count() == 0:
        return "cupy is installed but sees no CUDA device"
    return None


MISSING_CUDA = _missing_cuda()
needs_cuda = pytest.mark.skipif(MISSING_CUDA is not None, reason=MISSING_CUDA or "")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
