"""The Winograd F(2x2, 3x3) path of the prepared Conv: it matches a float64 direct convolution
and the generic kernel on odd/even sizes, symmetric/asymmetric pads and batches 1..33, only
3x3 stride-1 undilated ungrouped 2-D convs take it, the measured choice keeps the faster path,
and the exported benchmark CNN and ResNet-18 still match onnxruntime with it forced on."""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import pathlib

import numpy as np
import pytest

from modelkit.edge_runtime.kernels import conv as conv_module
from modelkit.edge_runtime.kernels.conv import conv

ROOT = pathlib.Path(__file__).resolve().parents[2]


def direct_conv(x, w, b, pads):
    """3x3 stride-1 convolution in float64 as a sum over the nine taps of shifted slices."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    top, left, bottom, right = pads
    padded = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])
    out_h, out_w = padded.shape[2] - 2, padded.shape[3] - 2
    y = np.zeros((x.shape[0], w.shape[0], out_h, out_w))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,mc->nmhw", padded[:, :, i:i + out_h, j:j + out_w], w[:, :, i, j])
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def realistic_weight(rng, m, c):
    """He-initialised 3x3 weights, the scale trained conv layers keep."""
    return (rng.standard_normal((m, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)


CASES = [
    # (n, c, h, w, m, pads, bias)
    (1, 1, 4, 4, 1, (1, 1, 1, 1), True),
    (2, 3, 7, 7, 5, (1, 1, 1, 1), True),      # odd output: the last tile row/column is cropped
    (3, 4, 8, 6, 6, (0, 0, 0, 0), False),     # no pads
    (5, 7, 9, 10, 3, (0, 1, 2, 0), True),     # asymmetric pads
    (33, 16, 6, 5, 8, (2, 0, 1, 1), True),
    (4, 32, 14, 14, 64, (1, 1, 1, 1), True),  # the benchmark CNN's conv2 (at a smaller batch)
    (2, 128, 3, 3, 16, (1, 1, 1, 1), False),  # one tile, many channels
]


def _prepared(policy, monkeypatch, w, b, attrs):
    monkeypatch.setattr(conv_module, "WINOGRAD_POLICY", policy)
    return conv_module.prepare_conv(np, attrs, [None, w, b])


@pytest.mark.parametrize("case", CASES)
def test_winograd_matches_float64_direct_conv_and_the_generic_kernel(case, monkeypatch):
    n, c, h, w_, m, pads, bias = case
    rng = np.random.default_rng(n * 100 + c)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = realistic_weight(rng, m, c)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    attrs = {"pads": [pads[0], pads[1], pads[2], pads[3]]}
    prepared = _prepared("always", monkeypatch, w, b, attrs)
    before = x.copy()
    (y,) = prepared(x, w, b)
    assert prepared.winograd_chosen == {x.shape: True}
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(x, before)
    expected = direct_conv(x, w, b, pads)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(y, conv(np, x, w, b, **attrs)[0], rtol=1e-4, atol=1e-5 * scale)


def test_winograd_handles_auto_pad_and_new_input_shapes(monkeypatch):
    rng = np.random.default_rng(3)
    w = realistic_weight(rng, 6, 4)
    prepared = _prepared("always", monkeypatch, w, None, {"auto_pad": "SAME_UPPER"})
    for shape in [(2, 4, 5, 8), (1, 4, 9, 3), (2, 4, 5, 8)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(prepared(x, w)[0], direct_conv(x, w, None, (1, 1, 1, 1)),
                                   rtol=1e-4, atol=1e-5)
    assert set(prepared.winograd_chosen) == {(2, 4, 5, 8), (1, 4, 9, 3)}


@pytest.mark.parametrize("attrs, kernel", [
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (3, 3)),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (3, 3)),
    ({"pads": [2, 2, 2, 2]}, (5, 5)),
    ({"pads": [1, 1]}, (3,)),
])
def test_winograd_is_not_taken_for_strides_dilations_other_kernels_or_ranks(attrs, kernel,
                                                                           monkeypatch):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3) + kernel).astype(np.float32)
    prepared = _prepared("always", monkeypatch, w, None, attrs)
    x = rng.standard_normal((2, 3) + (9,) * len(kernel)).astype(np.float32)
    np.testing.assert_allclose(prepared(x, w)[0], conv(np, x, w, **attrs)[0], rtol=1e-5,
                               atol=1e-5)
    assert prepared.winograd_chosen == {}


def test_grouped_conv_is_not_prepared_so_never_takes_winograd(monkeypatch):
    w = np.ones((4, 2, 3, 3), np.float32)
    assert _prepared("always", monkeypatch, w, None, {"group": 2}) is None


def test_measured_choice_keeps_the_faster_path(monkeypatch):
    """The race is decided by the clock: a Winograd path made slow loses, the normal one is
    recorded per input shape and the output is right either way."""
    rng = np.random.default_rng(5)
    w = realistic_weight(rng, 8, 8)
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    fast_conv = conv_module._winograd_conv
    prepared = _prepared("measure", monkeypatch, w, None, {"pads": [1, 1, 1, 1]})
    clock = itertools.count()
    # each timed run of Winograd takes 10 ticks, each of im2col 1 tick
    monkeypatch.setattr(conv_module.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(conv_module, "_winograd_conv",
                        lambda *args: [next(clock) for _ in range(9)] and fast_conv(*args))
    np.testing.assert_allclose(prepared(x, w)[0], direct_conv(x, w, None, (1, 1, 1, 1)),
                               rtol=1e-4, atol=1e-5)
    assert prepared.winograd_chosen == {x.shape: False}


def test_policy_never_leaves_the_prepared_conv_on_im2col(monkeypatch):
    w = np.ones((2, 2, 3, 3), np.float32)
    prepared = _prepared("never", monkeypatch, w, None, {"pads": [1, 1, 1, 1]})
    prepared(np.ones((1, 2, 4, 4), np.float32), w)
    assert prepared.winograd_chosen == {}


def _benchmark_models():
    spec = importlib.util.spec_from_file_location("benchmark_models", ROOT / "benchmarks/models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_exported_benchmark_models_with_winograd_match_onnxruntime(name, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from modelkit import edge_runtime
    from modelkit.exporter import export

    models = _benchmark_models()
    model = models.build(name)
    x = models.example_input(name, 3)
    onnx_path, mkb_path = tmp_path / f"{name}.onnx", tmp_path / f"{name}.mkb"
    for path in (onnx_path, mkb_path):
        export(model, (x[:1],), path, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    taken = []
    fast_conv = conv_module._winograd_conv
    monkeypatch.setattr(conv_module, "WINOGRAD_POLICY", "always")
    monkeypatch.setattr(conv_module, "_winograd_conv",
                        lambda *args: taken.append(args[1].shape) or fast_conv(*args))
    (ours,) = edge_runtime.load(mkb_path).run({"x": x}).values()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"x": x})
    assert taken  # at least one 3x3 stride-1 conv ran as Winograd
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_conv_module_docstring_examples_run():
    result = doctest.testmod(conv_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
