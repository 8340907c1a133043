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


def _conv_node_session(w, b, attrs, rank):
    inputs = ["x", "w"] + (["b"] if b is not None else [])
    weights = {"w": w, **({"b": b} if b is not None else {})}
    return _session([Node("Conv", inputs, ["y"], attrs=attrs)],
                    [ValueInfo("x", "float32", ("n", w.shape[1]) + tuple(f"d{i}" for i in range(rank)))],
                    [ValueInfo("y", "float32", None)], weights)


@pytest.mark.parametrize("case", CONV_CASES)
def test_prepared_conv_in_a_session_matches_direct_convolution_at_batch_one_and_more(case):
    """The plan's prepared Conv (weights reshaped at load, geometry per input shape, a batch of
    one with the bias folded into the GEMM) against the float64 loop reference; batch 1 and
    the case's batch alternate so the per-shape geometry cache is exercised both ways."""
    n, c, h, w_, m, k, s, p, d, bias = case
    rng = np.random.default_rng(6)
    w = rng.standard_normal((m, c) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    sess = _conv_node_session(w, b, {"strides": list(s), "pads": list(p), "dilations": list(d)}, 2)
    for batch in (1, n, 1, n + 1):
        x = rng.standard_normal((batch, c, h, w_)).astype(np.float32)
        before = x.copy()
        y = sess.run({"x": x})["y"]
        assert y.dtype == np.float32 and y.flags.c_contiguous
        np.testing.assert_allclose(y, reference_conv(x, w, b, s, p, d), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(x, before)


def test_prepared_conv_1d_3d_and_auto_pad_at_batch_one_match_the_generic_kernel():
    rng = np.random.default_rng(7)
    for shape, kernel, attrs in [((1, 3, 11), (3,), {"pads": [1, 2]}),
                                 ((1, 2, 4, 5, 3), (2, 3, 2), {"pads": [0, 1, 1, 1, 0, 0]}),
                                 ((1, 3, 7, 6), (3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
                                 ((1, 4, 5, 5), (1, 1), {})]:  # pointwise: x itself is the columns
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((5, shape[1]) + kernel).astype(np.float32)
        b = rng.standard_normal(5).astype(np.float32)
        y = _conv_node_session(w, b, attrs, len(kernel)).run({"x": x})["y"]
        np.testing.assert_allclose(y, conv(np, x, w, b, **attrs)[0], rtol=1e-5, atol=1e-5)


def test_prepare_conv_declines_what_it_does_not_cover_and_falls_back_for_other_weights():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    assert conv_module.prepare_conv(np, {"group": 2}, [None, w]) is None
    assert conv_module.prepare_conv(np, {}, [None, None]) is None  # weight computed per run
    assert conv_module.prepare_conv(np, {}, [None, w.astype(np.float64)]) is None
    prepared = conv_module.prepare_conv(np, {"pads": [1, 1, 1, 1]}, [None, w])
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    other = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(prepared(x, other)[0], reference_conv(x, other, None, (1, 1), (1, 1, 1, 1), (1, 1)),
                               rtol=1e-4, atol=1e-4)


def test_prepared_max_pool_matches_explicit_windows_across_input_shapes():
    from modelkit.edge_runtime.kernels.pool import prepare_max_pool

    rng = np.random.default_rng(9)
    for h, w, k, s, p, d, ceil in POOL_CASES:
        attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(p), dilations=list(d),
                     ceil_mode=ceil, n_outputs=1)
        pool = prepare_max_pool(np, attrs, [None])
        for shape in ((2, 3, h, w), (1, 2, h + 1, w + 2), (2, 3, h, w)):
            x = rng.standard_normal(shape).astype(np.float32)
            (y,) = pool(x)
            np.testing.assert_array_equal(y, reference_max_pool(x, k, s, p, d, ceil))
            assert not np.shares_memory(y, x)
    assert prepare_max_pool(np, {"kernel_shape": [2, 2], "n_outputs": 2}, [None]) is None


def _flatten_chain_model():
    """y = Reshape(x, Concat(Shape(x)[0:1], [-1])) + z: the exporter's Flatten, whose shape
    chain ends in a Mul (an op the plan may otherwise compute into in place) and a dead
    Unsqueeze that nothing reads."""
    nodes = [Node("Shape", ["x"], ["s"]), Node("Gather", ["s", "first"], ["n"], attrs={"axis": 0}),
             Node("Unsqueeze", ["n", "zero"], ["n1"]), Node("Unsqueeze", ["n", "zero"], ["unused"]),
             Node("Concat", ["n1", "minus_one"], ["target"], attrs={"axis": 0}),
             Node("Reshape", ["x", "target"], ["flat"]),
             Node("Cast", ["s"], ["sf"], attrs={"to": 1}), Node("Mul", ["sf", "two"], ["twice"]),
             Node("Add", ["twice", "w4"], ["t"]),  # twice dies here: must not be written into
             Node("Add", ["flat", "bias"], ["y"])]
    return Model(inputs=[ValueInfo("x", "float32", ("n", 2, 3, 2))],
                 outputs=[ValueInfo("y", "float32", None), ValueInfo("t", "float32", None)],
                 nodes=nodes, initializers={"first": np.array(0, np.int64),
                                            "zero": np.array([0], np.int64),
                                            "minus_one": np.array([-1], np.int64),
                                            "two": np.array(2, np.float32),
                                            "w4": np.ones(4, np.float32),
                                            "bias": np.arange(12, dtype=np.float32)})


def test_shape_chains_run_once_per_input_shape_and_stay_correct_when_it_changes():
    sess = Session(_flatten_chain_model())
    ops = [sess._plan.nodes[step[-1]].op_type for step in sess._plan.steps]
    assert ops == ["Concat", "Reshape", "Mul", "Add", "Add"]  # Shape/Gather/Unsqueeze/Cast folded
    rng = np.random.default_rng(10)
    for batch in (1, 3, 1, 5, 3):
        x = rng.standard_normal((batch, 2, 3, 2)).astype(np.float32)
        out = sess.run({"x": x})
        np.testing.assert_array_equal(out["y"], x.reshape(batch, -1) + np.arange(12, dtype=np.float32))
        np.testing.assert_array_equal(out["t"], 2 * np.array([batch, 2, 3, 2], np.float32) + 1)


def test_shape_chains_match_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from modelkit.edge_runtime.format.onnx_reader import read_onnx

    model = _flatten_chain_model()
    graph = helper.make_graph(
        [helper.make_node(n.op_type, n.inputs, n.outputs, **n.attrs) for n in model.nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 2])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "t")],
        [numpy_helper.from_array(a, name) for name, a in model.initializers.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    theirs = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = Session(read_onnx(proto))
    for batch in (2, 4, 2):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 3, 2)).astype(np.float32)
        expected = dict(zip(["y", "t"], theirs.run(None, {"x": x})))
        got = sess.run({"x": x})
        for name in ("y", "t"):
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5)])
def test_prepared_gemm_in_a_session_matches_numpy(trans_b, c_shape):
    rng = np.random.default_rng(11)
    b = rng.standard_normal((5, 3) if trans_b else (3, 5)).astype(np.float32)
    weights = {"b": b}
    inputs = ["a", "b"]
    if c_shape is not None:
        weights["c"] = rng.standard_normal(c_shape).astype(np.float32)
        inputs.append("c")
    sess = _session([Node("Gemm", inputs, ["y"], attrs={"transB": trans_b})],
                    [ValueInfo("a", "float32", ("m", 3))], [ValueInfo("y", "float32", None)], weights)
    for m in (1, 4):
        a = rng.standard_normal((m, 3)).astype(np.float32)
        expected = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
        if c_shape is not None:
            expected = expected + weights["c"]
        y = sess.run({"a": a})["y"]
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_prepare_gemm_leaves_scaled_and_transposed_a_to_the_generic_kernel():
    from modelkit.edge_runtime.kernels.matmul import prepare_gemm

    b = np.ones((3, 4), np.float32)
    assert prepare_gemm(np, {"alpha": 2.0}, [None, b]) is None
    assert prepare_gemm(np, {"transA": 1}, [None, b]) is None
    assert prepare_gemm(np, {}, [None, None]) is None
    assert prepare_gemm(np, {}, [None, b, None]) is None  # C computed per run


def reference_average_pool(x, kernel, strides, pads, count_include_pad):
    """Mean over each window by explicit loops (2-D, no ceil_mode); padding counts as zeros
    only with count_include_pad."""
    n, c, h, w = x.shape
    oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        r0, q0 = i * strides[0] - pads[0], j * strides[1] - pads[1]
        rows = [r for r in range(r0, r0 + kernel[0]) if 0 <= r < h]
        cols = [q for q in range(q0, q0 + kernel[1]) if 0 <= q < w]
        total = x[:, :, rows][:, :, :, cols].astype(np.float64).sum(axis=(2, 3))
        y[:, :, i, j] = total / (kernel[0] * kernel[1] if count_include_pad else len(rows) * len(cols))
    return y


@pytest.mark.parametrize("case", [
    # (h, w, kernel, strides, pads, count_include_pad)
    (4, 4, (4, 4), (1, 1), (0, 0, 0, 0), 0),   # global average: one sum per channel
    (7, 5, (7, 5), (2, 2), (0, 0, 0, 0), 0),
    (6, 6, (2, 2), (2, 2), (0, 0, 0, 0), 0),
    (5, 6, (3, 3), (2, 1), (1, 1, 1, 0), 0),
    (5, 6, (3, 3), (2, 1), (1, 1, 1, 0), 1),
    (4, 4, (4, 4), (1, 1), (1, 1, 1, 1), 0),   # whole-input kernel but padded: not one sum
])
def test_prepared_average_pool_matches_explicit_windows_across_input_shapes(case):
    from modelkit.edge_runtime.kernels.pool import prepare_average_pool

    h, w, k, s, p, include = case
    pool = prepare_average_pool(np, {"kernel_shape": list(k), "strides": list(s), "pads": list(p),
                                     "count_include_pad": include}, [None])
    rng = np.random.default_rng(12)
    for n, c in ((2, 3), (1, 4), (2, 3)):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        (y,) = pool(x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, reference_average_pool(x, k, s, p, include), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [7, 4096, 3 * 4096 + 5])
def test_in_place_relu_on_rows_of_zeros_matches_numpy_maximum_with_nan_and_signed_zero(size):
    """The plan's in-place Relu compares long arrays row by row with a row of zeros (the SIMD
    path); the result must be numpy's maximum(x, 0), NaN and -0.0 included, tail included."""
    x = np.random.default_rng(13).standard_normal(size).astype(np.float32)
    x[:3] = [np.nan, -0.0, -np.inf]
    sess = _session([Node("Add", ["x", "x"], ["t"]), Node("Relu", ["t"], ["y"])],
                    [ValueInfo("x", "float32", (size,))], [ValueInfo("y", "float32", None)])
    y = sess.run({"x": x})["y"]
    expected = np.maximum(x + x, np.float32(0))
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(expected))


def test_prepared_conv_with_a_weight_too_large_to_copy_adds_its_bias_separately(monkeypatch):
    monkeypatch.setattr(conv_module, "_FOLD_BYTES", 0)  # every weight stays a view
    rng = np.random.default_rng(14)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    sess = _conv_node_session(w, b, {"pads": [1, 1, 1, 1]}, 2)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 6, 5)).astype(np.float32)
        np.testing.assert_allclose(sess.run({"x": x})["y"],
                                   reference_conv(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("grid", [True, False])
def test_batch_one_columns_on_the_padded_grid_match_the_window_view(monkeypatch, grid):
    """Both batch-1 column recipes, forced in turn, against the generic kernel: stride-1
    layers of rank 1-3 with dilations and uneven pads (the grid's over-read past the last
    channel must only ever reach cropped outputs), with and without a bias, folded or not."""
    monkeypatch.setattr(conv_module, "_grid_pays", lambda *costs: grid)
    rng = np.random.default_rng(15)
    cases = [((1, 3, 7, 6), (3, 3), {"pads": [1, 1, 1, 1]}),
             ((1, 2, 9, 8), (2, 3), {"pads": [1, 0, 0, 2], "dilations": [2, 2]}),
             ((1, 4, 5, 6, 4), (2, 2, 3), {"pads": [0, 1, 1, 1, 0, 1], "dilations": [1, 2, 1]}),
             ((1, 3, 10), (3,), {"pads": [2, 1]})]
    for (shape, kernel, attrs), fold in itertools.product(cases, (1 << 20, 0)):
        monkeypatch.setattr(conv_module, "_FOLD_BYTES", fold)
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((5, shape[1]) + kernel).astype(np.float32)
        for b in (None, rng.standard_normal(5).astype(np.float32)):
            y = _conv_node_session(w, b, attrs, len(kernel)).run({"x": x})["y"]
            assert y.flags.c_contiguous
            np.testing.assert_allclose(y, conv(np, x, w, b, **attrs)[0], rtol=1e-5, atol=1e-5)


def test_the_grid_cost_model_picks_the_measured_winner():
    """Layers timed both ways (see _conv_geometry): the padded grid won on 14x14-16x16 maps
    and small channel counts, lost on 128 channels of 8x8 and 256 of 4x4."""
    picks = {}
    for c, h, m in [(32, 14, 64), (64, 16, 64), (16, 16, 16), (128, 8, 128), (256, 4, 256), (1, 28, 32)]:
        _, sample = conv_module._conv_geometry(np.zeros((1, c, h, h), np.float32),
                                               np.zeros((m, c, 3, 3), np.float32),
                                               {"pads": [1, 1, 1, 1]})
        picks[(c, h, m)] = sample.grid is not None
    assert picks == {(32, 14, 64): True, (64, 16, 64): True, (16, 16, 16): True,
                     (128, 8, 128): False, (256, 4, 256): False, (1, 28, 32): False}
