"""Conv, pooling, normalization, matmul, softmax/attention, RNN and Resize kernels against
three oracles:

- the ONNX backend node cases of these ops, run straight from the registry (numpy) and compared
  with the onnx runner's own tolerances (one skip, with its reason, in SKIPPED);
- central finite differences in float64 for the gradient helpers used by training;
- onnxruntime on single-node models with random weights, at shapes the node cases lack.
"""

import numpy as np
import pytest

from modelkit.edge_runtime.kernels import lookup
from modelkit.edge_runtime.kernels.conv import (
    conv, conv_input_grad, conv_transpose, conv_weight_grad,
)
from modelkit.edge_runtime.kernels.pool import (
    average_pool, average_pool_grad, max_pool, max_pool_grad,
)
from node_cases import assert_outputs_match, run_single_node, single_node_cases

HEAVY_OPS = (
    "MatMul Gemm Einsum MatMulInteger QLinearMatMul Conv ConvTranspose ConvInteger QLinearConv "
    "CausalConvWithState DeformConv "
    "MaxPool MaxUnpool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool "
    "BatchNormalization LayerNormalization RMSNormalization "
    "InstanceNormalization GroupNormalization LpNormalization Softmax LogSoftmax Hardmax Dropout "
    "Attention "
    "LSTM GRU RNN Resize Upsample"
).split()

SKIPPED = {
    "test_maxunpool_export_with_output_shape":
        "expects indices relative to the inferred (un-padded) output, then zero-padding to "
        "output_shape; onnxruntime and PyTorch (whose exports use MaxUnpool with output_shape) "
        "index the output_shape tensor itself, and so do we",
}

CASES = single_node_cases(HEAVY_OPS)


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=SKIPPED[c.name])]
                 if c.name in SKIPPED else []) for c in CASES])
def test_node_case(case):
    for outputs, expected in run_single_node(case, lookup):
        assert_outputs_match(case, outputs, expected)


def test_max_unpool_with_output_shape_indexes_it_like_onnxruntime():
    x = np.array([[[[5., 6.], [7., 8.]]]], np.float32)
    indices = np.array([[[[5, 7], [13, 15]]]])
    output_shape = np.array([1, 1, 5, 5])
    expected = _run_onnxruntime("MaxUnpool", [x, indices, output_shape],
                                dict(kernel_shape=[2, 2], strides=[2, 2]))[0]
    got = lookup("", "MaxUnpool", 17).fn(np, x, indices, output_shape, kernel_shape=[2, 2],
                                         strides=[2, 2])[0]
    np.testing.assert_array_equal(got, expected)


def test_every_heavy_op_has_a_kernel_at_the_newest_opset():
    newest = pytest.importorskip("onnx").defs.onnx_opset_version()
    assert [op for op in HEAVY_OPS if lookup("", op, newest) is None] == []


# --- finite differences (float64) -------------------------------------------------------------

def _numeric_grad(f, x, dy, rng, n_points=24, eps=1e-4):
    """Central differences of sum(f(x) * dy) at a random sample of x's coordinates.

    The ops checked are linear or piecewise linear, so a large eps costs no truncation error.
    """
    flat = x.reshape(-1)
    points = rng.choice(flat.size, size=min(n_points, flat.size), replace=False)
    grads = {}
    for p in points:
        saved = flat[p]
        flat[p] = saved + eps
        up = np.sum(f(x) * dy)
        flat[p] = saved - eps
        down = np.sum(f(x) * dy)
        flat[p] = saved
        grads[p] = (up - down) / (2 * eps)
    return grads


def _assert_grad_matches(analytic, numeric):
    flat = analytic.reshape(-1)
    for p, value in numeric.items():
        assert flat[p] == pytest.approx(value, rel=1e-6, abs=1e-8), f"coordinate {p}"


CONV_GEOMETRIES = [
    # (x shape, w shape, strides, pads, dilations, group)
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 4, 8, 7), (6, 2, 3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    ((1, 4, 9, 9), (4, 1, 3, 3), (2, 2), (1, 1, 1, 1), (2, 1), 4),
    ((1, 2, 6, 6), (6, 1, 2, 2), (1, 2), (0, 0, 1, 1), (1, 1), 2),
    ((2, 3, 5, 5), (2, 3, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ((2, 2, 11), (3, 2, 4), (3,), (2, 1), (2,), 1),
    ((1, 2, 4, 5, 4), (2, 1, 2, 3, 2), (1, 2, 1), (1, 0, 1, 0, 1, 1), (1, 1, 2), 2),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, pads, dilations, group", CONV_GEOMETRIES)
def test_conv_gradients_match_finite_differences(x_shape, w_shape, strides, pads, dilations,
                                                 group):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    y = conv(np, x, w, **attrs)[0]
    dy = rng.standard_normal(y.shape)

    dx = conv_input_grad(np, dy, w, x.shape, **attrs)
    assert dx.shape == x.shape
    _assert_grad_matches(dx, _numeric_grad(lambda v: conv(np, v, w, **attrs)[0], x, dy, rng))

    dw = conv_weight_grad(np, x, dy, w.shape, **attrs)
    assert dw.shape == w.shape
    _assert_grad_matches(dw, _numeric_grad(lambda v: conv(np, x, v, **attrs)[0], w, dy, rng))


POOL_GEOMETRIES = [
    # (x shape, kernel, strides, pads, dilations, ceil_mode)
    ((2, 3, 7, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),
    ((1, 2, 7, 7), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ((1, 2, 8, 9), (3, 2), (1, 2), (1, 0, 1, 1), (2, 1), 0),
    ((2, 2, 10), (3,), (2,), (1, 1), (1,), 1),
    ((1, 1, 5, 4, 5), (2, 2, 3), (2, 1, 2), (0, 1, 1, 1, 0, 1), (1, 1, 1), 0),
]


@pytest.mark.parametrize("x_shape, kernel, strides, pads, dilations, ceil_mode", POOL_GEOMETRIES)
def test_max_pool_gradient_matches_finite_differences(x_shape, kernel, strides, pads, dilations,
                                                      ceil_mode):
    rng = np.random.default_rng(1)
    # a permutation keeps every value distinct, so no window has a tie within eps
    x = rng.permutation(np.prod(x_shape)).reshape(x_shape).astype(np.float64) / 7.0
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations,
                 ceil_mode=ceil_mode)
    y = max_pool(np, x, n_outputs=1, **attrs)[0]
    dy = rng.standard_normal(y.shape)
    dx = max_pool_grad(np, dy, x, **attrs)
    assert dx.shape == x.shape
    numeric = _numeric_grad(lambda v: max_pool(np, v, n_outputs=1, **attrs)[0], x, dy, rng,
                            n_points=x.size)
    _assert_grad_matches(dx, numeric)


def test_max_pool_gradient_goes_to_the_first_of_tied_maxima():
    x = np.ones((1, 1, 2, 2))
    dx = max_pool_grad(np, np.ones((1, 1, 1, 1)), x, kernel_shape=(2, 2))
    np.testing.assert_array_equal(dx, [[[[1.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("x_shape, kernel, strides, pads, dilations, ceil_mode", POOL_GEOMETRIES)
def test_average_pool_gradient_matches_finite_differences(x_shape, kernel, strides, pads,
                                                          dilations, ceil_mode,
                                                          count_include_pad):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations,
                 ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    y = average_pool(np, x, **attrs)[0]
    dy = rng.standard_normal(y.shape)
    dx = average_pool_grad(np, dy, x.shape, **attrs)
    assert dx.shape == x.shape
    _assert_grad_matches(dx, _numeric_grad(lambda v: average_pool(np, v, **attrs)[0], x, dy, rng))


def test_kernels_keep_float32_and_leave_inputs_untouched():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    before = [a.copy() for a in (x, w, b)]
    outputs = [conv(np, x, w, b, group=4, pads=[1] * 4)[0],
               conv(np, x, w.reshape(1, 4, 3, 3), b[:1])[0],
               conv_transpose(np, x, w, b, group=4, strides=[2, 2])[0],
               max_pool(np, x, kernel_shape=[2, 2])[0],
               average_pool(np, x, kernel_shape=[3, 3], pads=[1] * 4)[0]]
    assert all(o.dtype == np.float32 for o in outputs)
    for original, a in zip(before, (x, w, b)):
        np.testing.assert_array_equal(original, a)


# --- onnxruntime on random single-node models ---------------------------------------------------

def _run_onnxruntime(op_type, inputs, attrs, n_outputs=1, opset=17):
    """Run one node with every input fed (None = omitted) under onnxruntime."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    outputs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outputs, **attrs)
    graph_inputs = [helper.make_tensor_value_info(
        n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(names, inputs) if v is not None]
    graph_outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                     for o in outputs]
    model = helper.make_model(helper.make_graph([node], "g", graph_inputs, graph_outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {n: v for n, v in zip(names, inputs) if v is not None})


CONV_ORT_CASES = [
    # (x shape, w shape, attrs)
    ((2, 8, 13, 11), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 6, 12, 12), (6, 2, 3, 3), dict(group=3, strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 6, 12, 12), (6, 2, 3, 3), dict(group=3, strides=[2, 1], dilations=[2, 3],
                                        pads=[0, 2, 1, 1])),
    ((3, 8, 9, 9), (16, 1, 5, 5), dict(group=8, pads=[2, 1, 2, 1])),
    ((2, 16, 7, 7), (8, 16, 1, 1), dict()),
    ((2, 3, 20), (4, 3, 5), dict(strides=[3], auto_pad="SAME_LOWER")),
    ((1, 2, 5, 6, 7), (3, 2, 3, 3, 3), dict(pads=[1, 0, 1, 1, 0, 1], strides=[1, 2, 2])),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_ORT_CASES)
def test_conv_matches_onnxruntime(x_shape, w_shape, attrs):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    expected = _run_onnxruntime("Conv", [x, w, b], attrs)[0]
    np.testing.assert_allclose(conv(np, x, w, b, **attrs)[0], expected, rtol=1e-4, atol=1e-4)


CONV_TRANSPOSE_ORT_CASES = [
    ((2, 8, 5, 6), (8, 4, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1],
                                      output_padding=[1, 0])),
    ((1, 6, 4, 4), (6, 2, 3, 2), dict(group=3, strides=[2, 3], dilations=[1, 2])),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(strides=[2, 2], output_shape=[10, 11])),
    ((1, 4, 5, 5), (4, 2, 4, 4), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((2, 3, 7), (3, 2, 4), dict(strides=[3], pads=[2, 1])),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_TRANSPOSE_ORT_CASES)
def test_conv_transpose_matches_onnxruntime(x_shape, w_shape, attrs):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(np.float32)
    expected = _run_onnxruntime("ConvTranspose", [x, w, b], attrs)[0]
    got = conv_transpose(np, x, w, b, **attrs)[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _recurrent_inputs(rng, op, seq, batch, inputs, hidden, n_directions, *, lengths=False,
                      initial=False, peepholes=False):
    """Random (X, W, R, B, sequence_lens, initial_h[, initial_c, P]) for one RNN-family node."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    args = [rand(seq, batch, inputs), rand(n_directions, gates * hidden, inputs),
            rand(n_directions, gates * hidden, hidden), rand(n_directions, 2 * gates * hidden),
            rng.integers(1, seq + 1, size=batch).astype(np.int32) if lengths else None,
            rand(n_directions, batch, hidden) if initial else None]
    if op == "LSTM":
        args += [rand(n_directions, batch, hidden) if initial else None,
                 rand(n_directions, 3 * hidden) if peepholes else None]
    while args[-1] is None:
        args.pop()
    return args


RECURRENT_ORT_CASES = [
    # (op, seq, batch, input, hidden, attrs, options)
    ("LSTM", 5, 3, 4, 6, dict(direction="forward"), dict(initial=True, peepholes=True)),
    ("LSTM", 6, 4, 3, 5, dict(direction="bidirectional"), dict(lengths=True, initial=True)),
    ("LSTM", 4, 2, 3, 4, dict(direction="reverse", clip=0.7), dict(lengths=True)),
    ("GRU", 5, 3, 4, 6, dict(direction="forward"), dict(initial=True)),
    ("GRU", 6, 4, 3, 5, dict(direction="bidirectional", linear_before_reset=1),
     dict(lengths=True, initial=True)),
    ("GRU", 4, 2, 3, 4, dict(direction="reverse", activations=["HardSigmoid", "Relu"],
                             activation_alpha=[0.3], activation_beta=[0.4]), dict(lengths=True)),
    ("RNN", 5, 3, 4, 6, dict(direction="bidirectional", activations=["Tanh", "LeakyRelu"],
                             activation_alpha=[0.2]), dict(lengths=True, initial=True)),
]


@pytest.mark.parametrize("op, seq, batch, inputs, hidden, attrs, options", RECURRENT_ORT_CASES)
def test_recurrent_ops_match_onnxruntime(op, seq, batch, inputs, hidden, attrs, options):
    rng = np.random.default_rng(6)
    n_directions = 2 if attrs["direction"] == "bidirectional" else 1
    args = _recurrent_inputs(rng, op, seq, batch, inputs, hidden, n_directions, **options)
    n_outputs = 3 if op == "LSTM" else 2
    attrs = dict(attrs, hidden_size=hidden)
    expected = _run_onnxruntime(op, args, attrs, n_outputs=n_outputs)
    got = lookup("", op, 17).fn(np, *args, n_outputs=n_outputs, **attrs)
    assert len(got) == n_outputs
    for g, e in zip(got, expected):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent_layout_1_is_batch_first(op):
    rng = np.random.default_rng(7)
    x, w, r, b, lengths, h0, *rest = _recurrent_inputs(
        rng, op, 4, 3, 2, 5, 2, lengths=True, initial=True)
    fn = lookup("", op, 17).fn
    seq_first = fn(np, x, w, r, b, lengths, h0, *rest, direction="bidirectional")
    batch_first = fn(np, x.transpose(1, 0, 2), w, r, b, lengths, h0.transpose(1, 0, 2),
                     *[s.transpose(1, 0, 2) for s in rest], direction="bidirectional", layout=1)
    np.testing.assert_allclose(batch_first[0], seq_first[0].transpose(2, 0, 1, 3))
    for a, e in zip(batch_first[1:], seq_first[1:]):
        np.testing.assert_allclose(a, e.transpose(1, 0, 2))


RESIZE_ORT_CASES = [
    # (x shape, scales, sizes, attrs)
    ((2, 3, 7, 9), [1, 1, 2.0, 1.5], None, dict(mode="linear")),
    ((2, 3, 7, 9), [1, 1, 0.5, 0.7], None, dict(mode="cubic", antialias=1)),
    ((1, 2, 9, 6), None, [1, 2, 4, 13], dict(mode="cubic", exclude_outside=1,
                                            cubic_coeff_a=-0.5)),
    ((1, 2, 9, 6), None, [1, 2, 5, 4], dict(mode="linear", antialias=1,
                                           coordinate_transformation_mode="pytorch_half_pixel")),
    ((1, 3, 5, 5), None, [1, 3, 11, 8], dict(mode="nearest", nearest_mode="round_prefer_ceil",
                                            coordinate_transformation_mode="align_corners")),
    ((1, 3, 8, 8), [1, 1, 0.6, 1.7], None, dict(mode="nearest", nearest_mode="floor",
                                               coordinate_transformation_mode="asymmetric")),
]


@pytest.mark.parametrize("x_shape, scales, sizes, attrs", RESIZE_ORT_CASES)
def test_resize_matches_onnxruntime(x_shape, scales, sizes, attrs):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(x_shape).astype(np.float32)
    scales = None if scales is None else np.array(scales, np.float32)
    sizes = None if sizes is None else np.array(sizes, np.int64)
    expected = _run_onnxruntime("Resize", [x, None, scales, sizes], attrs, opset=19)[0]
    got = lookup("", "Resize", 19).fn(np, x, None, scales, sizes, **attrs)[0]
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_shape_errors_name_the_op_and_the_shapes():
    from modelkit.edge_runtime.errors import KernelError

    x = np.zeros((1, 6, 5, 5), np.float32)
    with pytest.raises(KernelError, match=r"Conv: weight W of shape \(4, 4, 3, 3\).*6"):
        conv(np, x, np.zeros((4, 4, 3, 3), np.float32))
    with pytest.raises(KernelError, match="not divisible by group 4"):
        conv(np, x, np.zeros((4, 1, 3, 3), np.float32), group=4)
    with pytest.raises(KernelError, match="kernel extent 7 is larger"):
        conv(np, x, np.zeros((4, 6, 7, 7), np.float32))
    with pytest.raises(KernelError, match="MaxPool: kernel_shape"):
        max_pool(np, x, kernel_shape=[2])
    with pytest.raises(KernelError, match=r"LSTM: W has shape \(1, 8, 5\), expected \(1, 16, 5\)"):
        lookup("", "LSTM", 17).fn(np, np.zeros((2, 1, 5), np.float32),
                                  np.zeros((1, 8, 5), np.float32),
                                  np.zeros((1, 16, 4), np.float32))
