"""The performance fast paths give the same results as straightforward references: the
channel-major im2col Conv (incl. chunked batches), MaxPool without padding buffers, the
tie-aware MaxPool gradient, and the plan's in-place elementwise steps (which must never write
into a feed, a weight or a view of either)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modelkit.edge_runtime import Session
from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
from modelkit.edge_runtime.kernels import conv as conv_module
from modelkit.edge_runtime.kernels.conv import conv
from modelkit.edge_runtime.kernels.pool import max_pool, max_pool_grad


def reference_conv(x, w, b, strides, pads, dilations):
    """Direct convolution in float64, one output position at a time (2-D)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    (sh, sw), (dh, dw) = strides, dilations
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    kh, kw = w.shape[2:]
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh:i * sh + (kh - 1) * dh + 1:dh, j * sw:j * sw + (kw - 1) * dw + 1:dw]
            y[:, :, i, j] = np.einsum("nchw,mchw->nm", patch, w)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


CONV_CASES = [
    # (n, c, h, w, m, kernel, strides, pads, dilations, bias)
    (1, 1, 5, 7, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),
    (3, 4, 9, 6, 5, (3, 2), (2, 1), (0, 1, 2, 0), (1, 1), False),
    (2, 3, 8, 8, 4, (3, 3), (1, 2), (2, 2, 2, 2), (2, 1), True),
    (1, 6, 4, 5, 3, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), True),   # 1x1 at batch 1: no copy
    (4, 6, 7, 7, 3, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), False),  # strided 1x1
    (5, 2, 6, 6, 7, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), True),   # stem-like
    (2, 3, 12, 11, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),  # rows long enough: per tap
    (3, 5, 4, 4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),   # short rows: one gather
    (2, 3, 9, 8, 2, (2, 3), (2, 3), (1, 0, 0, 2), (2, 1), True),    # gather, strided, dilated
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_direct_convolution(case):
    n, c, h, w_, m, k, s, p, d, bias = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((m, c) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    (y,) = conv(np, x, w, b, strides=list(s), pads=list(p), dilations=list(d))
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, reference_conv(x, w, b, s, p, d), rtol=1e-4, atol=1e-4)


def test_conv_in_sample_chunks_matches_whole_batch(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    whole = conv(np, x, w, b, pads=[1, 1, 1, 1])[0]
    monkeypatch.setattr(conv_module, "_COLUMN_BYTES", 3 * 9 * 36 * 4 * 2)  # two samples a chunk
    chunked = conv(np, x, w, b, pads=[1, 1, 1, 1])[0]
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(whole, reference_conv(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1)),
                               rtol=1e-4, atol=1e-4)


def test_conv_1d_and_3d_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(2)
    for shape, kernel, pads in [((2, 3, 11), (3,), (1, 2)), ((2, 2, 4, 5, 3), (2, 3, 2), (0, 1, 1, 1, 0, 0))]:
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((4, shape[1]) + kernel).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=list(pads))
        graph = helper.make_graph([node], "g", [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        expected = ort.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"]).run(None, {"x": x, "w": w})[0]
        np.testing.assert_allclose(conv(np, x, w, pads=list(pads))[0], expected, rtol=1e-4, atol=1e-4)


def reference_max_pool(x, kernel, strides, pads, dilations, ceil_mode):
    """Max over each window by explicit loops; positions outside x do not count (2-D)."""
    n, c, h, w = x.shape
    sizes = []
    for dim, size in enumerate((h, w)):
        span = (kernel[dim] - 1) * dilations[dim] + 1
        room = size + pads[dim] + pads[dim + 2] - span
        out = (-(-room // strides[dim]) if ceil_mode else room // strides[dim]) + 1
        if ceil_mode and (out - 1) * strides[dim] >= size + pads[dim]:
            out -= 1
        sizes.append(out)
    y = np.full((n, c) + tuple(sizes), -np.inf, dtype=x.dtype)
    for i, j in itertools.product(*map(range, sizes)):
        for a, b in itertools.product(range(kernel[0]), range(kernel[1])):
            r = i * strides[0] - pads[0] + a * dilations[0]
            q = j * strides[1] - pads[1] + b * dilations[1]
            if 0 <= r < h and 0 <= q < w:
                y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, q])
    return y


POOL_CASES = [
    # (h, w, kernel, strides, pads, dilations, ceil_mode)
    (8, 8, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),
    (9, 7, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    (8, 8, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),
    (7, 10, (3, 2), (1, 3), (1, 0, 2, 1), (1, 1), 1),
    (9, 9, (2, 3), (2, 1), (1, 1, 0, 1), (2, 2), 0),
    (1, 5, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1), 0),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_matches_explicit_windows(case):
    h, w, k, s, p, d, ceil = case
    x = np.random.default_rng(3).standard_normal((2, 3, h, w)).astype(np.float32)
    (y,) = max_pool(np, x, kernel_shape=list(k), strides=list(s), pads=list(p), dilations=list(d),
                    ceil_mode=ceil, n_outputs=1)
    expected = reference_max_pool(x, k, s, p, d, ceil)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, expected)


def test_max_pool_one_tap_window_returns_a_copy():
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
    (y,) = max_pool(np, x, kernel_shape=[1, 1], n_outputs=1)
    y[...] = 0
    assert x.sum() == 28


def reference_max_pool_grad(dy, x, kernel, strides, pads, dilations, ceil_mode):
    """dy of each window sent to its first maximum in row-major tap order (PyTorch's rule)."""
    y = reference_max_pool(x, kernel, strides, pads, dilations, ceil_mode)
    gx = np.zeros(x.shape, np.float64)
    h, w = x.shape[2:]
    for nn, cc, i, j in itertools.product(*map(range, y.shape)):
        for a, b in itertools.product(range(kernel[0]), range(kernel[1])):
            r = i * strides[0] - pads[0] + a * dilations[0]
            q = j * strides[1] - pads[1] + b * dilations[1]
            if 0 <= r < h and 0 <= q < w and x[nn, cc, r, q] == y[nn, cc, i, j]:
                gx[nn, cc, r, q] += dy[nn, cc, i, j]
                break
    return gx


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_grad_goes_to_the_first_maximum(case):
    h, w, k, s, p, d, ceil = case
    rng = np.random.default_rng(4)
    # few distinct values: many windows hold tied maxima
    x = rng.integers(0, 3, size=(2, 2, h, w)).astype(np.float32)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), dilations=list(d), ceil_mode=ceil)
    (y,) = max_pool(np, x, n_outputs=1, **attrs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx = max_pool_grad(np, dy, x, **attrs)
    assert gx.dtype == np.float32 and gx.shape == x.shape
    np.testing.assert_allclose(gx, reference_max_pool_grad(dy, x, k, s, p, d, ceil), rtol=1e-6, atol=1e-6)


def _session(nodes, inputs, outputs, initializers=None):
    return Session(Model(inputs=inputs, outputs=outputs, nodes=nodes, initializers=initializers or {}))


def test_in_place_relu_after_conv_matches_reference():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    sess = _session([Node("Conv", ["x", "w"], ["c"], attrs={"pads": [1, 1, 1, 1]}),
                     Node("Relu", ["c"], ["y"])],
                    [ValueInfo("x", "float32", (2, 3, 6, 6))], [ValueInfo("y", "float32", None)],
                    {"w": w})
    expected = np.maximum(reference_conv(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1)), 0)
    np.testing.assert_allclose(sess.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-4)


def test_in_place_steps_never_write_into_feeds_weights_or_their_views():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    bias = np.array([10.0, 20.0], np.float32)
    before = x.copy()
    sess = _session([Node("Reshape", ["x", "shape"], ["r"]),   # a view of the feed
                     Node("Relu", ["r"], ["a"]),
                     Node("Add", ["a", "bias"], ["y"]),        # a is fresh: written in place
                     Node("Relu", ["x"], ["z"])],              # the feed itself
                    [ValueInfo("x", "float32", (2, 2))],
                    [ValueInfo("y", "float32", None), ValueInfo("z", "float32", None)],
                    {"shape": np.array([4], np.int64), "bias": np.tile(bias, 2)})
    out = sess.run({"x": x})
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(out["y"], np.maximum(before.reshape(4), 0) + np.tile(bias, 2))
    np.testing.assert_array_equal(out["z"], np.maximum(before, 0))
    np.testing.assert_array_equal(sess.run({"x": x})["y"], out["y"])  # weights untouched


def test_in_place_binary_ops_keep_operand_order_and_never_broadcast_into_an_input():
    x = np.array([[1.0, -2.0, 3.0]], np.float32)
    big = np.arange(6, dtype=np.float32).reshape(2, 3)
    row = np.array([[10.0, 20.0, 30.0]], np.float32)
    sess = _session([Node("Relu", ["x"], ["r"]), Node("Sub", ["r", "big"], ["y"]),   # (1,3)-(2,3)
                     Node("Relu", ["x"], ["s"]), Node("Add", ["s", "one"], ["s2"]),
                     Node("Div", ["row", "s2"], ["z"])],  # the dying input on the right
                    [ValueInfo("x", "float32", (1, 3))],
                    [ValueInfo("y", "float32", None), ValueInfo("z", "float32", None)],
                    {"big": big, "row": row, "one": np.ones((1, 3), np.float32)})
    out = sess.run({"x": x})
    relu = np.maximum(x, 0)
    np.testing.assert_array_equal(out["y"], relu - big)
    np.testing.assert_allclose(out["z"], row / (relu + 1), rtol=1e-6)


GRAD_CASES = [
    # (n, c, h, w, m, kernel, strides, pads, dilations)
    (1, 2, 5, 6, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 3, 9, 7, 4, (3, 2), (2, 1), (0, 1, 2, 0), (1, 2)),
    (2, 4, 6, 6, 5, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    (2, 3, 11, 11, 2, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_conv_gradients_are_the_adjoints_of_conv(case):
    """<conv(x, w), dy> = <x, input_grad(dy, w)> = <w, weight_grad(x, dy)>, in float64."""
    from modelkit.edge_runtime.kernels.conv import conv_input_grad, conv_weight_grad

    n, c, h, w_, m, k, s, p, d = case
    rng = np.random.default_rng(6)
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((m, c) + k)
    attrs = dict(strides=list(s), pads=list(p), dilations=list(d))
    y = reference_conv(x, w, None, s, p, d)
    dy = rng.standard_normal(y.shape)
    gx = conv_input_grad(np, dy, w, x.shape, **attrs)
    gw = conv_weight_grad(np, x, dy, w.shape, **attrs)
    assert gx.shape == x.shape and gw.shape == w.shape
    np.testing.assert_allclose(np.vdot(x, gx), np.vdot(y, dy), rtol=1e-10)
    np.testing.assert_allclose(np.vdot(w, gw), np.vdot(y, dy), rtol=1e-10)
    # and entry by entry: each gradient entry is the derivative along that one coordinate
    e = np.zeros_like(x)
    e[-1, 0, 1, 2] = 1.0
    np.testing.assert_allclose(gx[-1, 0, 1, 2], np.vdot(reference_conv(e, w, None, s, p, d), dy), rtol=1e-10, atol=1e-12)
    e = np.zeros_like(w)
    e[-1, -1, 0, -1] = 1.0
    np.testing.assert_allclose(gw[-1, -1, 0, -1], np.vdot(reference_conv(x, e, None, s, p, d), dy), rtol=1e-10, atol=1e-12)


def test_conv_gradients_keep_float32():
    from modelkit.edge_runtime.kernels.conv import conv_input_grad, conv_weight_grad

    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    dy = np.ones((2, 4, 5, 5), np.float32)
    assert conv_input_grad(np, dy, w, x.shape, pads=[1, 1, 1, 1]).dtype == np.float32
    assert conv_weight_grad(np, x, dy, w.shape, pads=[1, 1, 1, 1]).dtype == np.float32


def test_relu_moved_after_max_pool_gives_the_same_result_and_keeps_intermediates_exact():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    nodes = [Node("Neg", ["x"], ["n"]), Node("Relu", ["n"], ["r"]),
             Node("MaxPool", ["r"], ["y"], attrs={"kernel_shape": [3, 3], "strides": [2, 2],
                                                  "pads": [1, 1, 1, 1]})]
    expected = reference_max_pool(np.maximum(-x, 0), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0)
    inputs = [ValueInfo("x", "float32", (2, 3, 7, 7))]
    y_only = _session(nodes, inputs, [ValueInfo("y", "float32", None)])
    np.testing.assert_array_equal(y_only.run({"x": x})["y"], expected)
    # when the Relu's output is itself an output, it is computed where it stands
    both = _session(nodes, inputs, [ValueInfo("y", "float32", None), ValueInfo("r", "float32", None)])
    out = both.run({"x": x})
    np.testing.assert_array_equal(out["y"], expected)
    np.testing.assert_array_equal(out["r"], np.maximum(-x, 0))


def test_integer_binary_ops_with_a_dying_input_keep_their_own_semantics():
    x = np.array([7, -7, 9], np.int64)
    sess = _session([Node("Add", ["x", "x"], ["twice"]), Node("Div", ["twice", "three"], ["y"])],
                    [ValueInfo("x", "int64", (3,))], [ValueInfo("y", "int64", None)],
                    {"three": np.array(3, np.int64)})
    y = sess.run({"x": x})["y"]
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [4, -4, 6])  # ONNX integer Div truncates toward zero
