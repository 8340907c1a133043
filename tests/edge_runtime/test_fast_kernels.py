"""The batch-1 fast paths of the shared kernels (scalar Gather, Relu against a zero row,
LayerNormalization by GEMV row sums, Softmax shifted by the global maximum, the GRU's default
cell) against float64 numpy formulas written here and onnxruntime on one-node models."""

import numpy as np
import pytest

from modelkit.edge_runtime.kernels.elementwise import relu
from modelkit.edge_runtime.kernels.indexing import gather
from modelkit.edge_runtime.kernels.norm import (group_normalization, instance_normalization,
                                                layer_normalization)
from modelkit.edge_runtime.kernels.softmax import softmax, softmax_flattened


def _rng():
    return np.random.default_rng(0)


def _run_onnxruntime(node_kwargs, feeds, n_outputs=1, opset=17):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                            a.shape) for name, a in feeds.items()]
    outputs = [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None)
               for i in range(n_outputs)]
    node = helper.make_node(inputs=list(feeds), outputs=[o.name for o in outputs],
                            **node_kwargs)
    graph = helper.make_graph([node], "one_node", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("axis, index", [(0, 3), (0, -1), (1, 2), (-1, -4), (2, 0)])
def test_gather_scalar_index_is_basic_indexing(axis, index):
    data = _rng().standard_normal((5, 6, 7)).astype(np.float32)
    (got,) = gather(np, data, np.array(index, np.int64), axis=axis)
    dim = data.shape[axis]
    expected = np.moveaxis(data, axis, 0)[index % dim]
    np.testing.assert_array_equal(got, expected)
    assert got.shape == expected.shape


def test_gather_scalar_index_out_of_range_raises():
    with pytest.raises(IndexError):
        gather(np, np.zeros((4, 2), np.float32), np.array(4, np.int64))
    with pytest.raises(IndexError):
        gather(np, np.zeros((4, 2), np.float32), np.array(-5, np.int64))


def test_gather_negative_indices_without_wrapping_pass():
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    indices = np.array([[-1, 0], [5, -6]], np.int32)
    (got,) = gather(np, data, indices, axis=1)
    np.testing.assert_array_equal(got, data[:, [[5, 0], [5, 0]]])


@pytest.mark.parametrize("shape", [(1, 64), (3, 4096), (2, 5000), (1, 32, 28, 28)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_matches_where(shape, dtype):
    x = _rng().standard_normal(shape).astype(dtype)
    original = x.copy()
    (got,) = relu(np, x)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, np.where(x > 0, x, 0))
    np.testing.assert_array_equal(x, original)  # input untouched


def test_relu_non_contiguous_and_integer_inputs():
    x = _rng().standard_normal((100, 100)).astype(np.float32).T
    np.testing.assert_array_equal(relu(np, x)[0], np.where(x > 0, x, 0))
    np.testing.assert_array_equal(relu(np, np.int64([-3, 4]))[0], [0, 4])


def _layer_norm_float64(x, scale, bias, axis, epsilon):
    axes = tuple(range(axis, x.ndim))
    wide = x.astype(np.float64)
    mean = wide.mean(axis=axes, keepdims=True)
    var = ((wide - mean) ** 2).mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + epsilon)
    return (wide - mean) * inv_std * scale + bias, mean, inv_std


@pytest.mark.parametrize("shape, axis", [((1, 64, 128), -1), ((2, 3, 4, 5), 1),
                                         ((2, 3, 4, 5), 2), ((4, 10), 0), ((1, 1, 1), -1)])
def test_layer_normalization_matches_float64(shape, axis):
    rng = _rng()
    x = (rng.standard_normal(shape) * 3 + 1000).astype(np.float32)  # a large mean
    norm_shape = shape[axis:]
    scale = rng.standard_normal(norm_shape).astype(np.float32)
    bias = rng.standard_normal(norm_shape).astype(np.float32)
    y, mean, inv_std = layer_normalization(np, x, scale, bias, axis=axis)
    ry, rmean, rinv = _layer_norm_float64(x, scale, bias, axis % len(shape), 1e-5)
    assert y.dtype == mean.dtype == inv_std.dtype == np.float32
    assert mean.shape == rmean.shape and inv_std.shape == rinv.shape
    np.testing.assert_allclose(mean, rmean, rtol=1e-6)
    np.testing.assert_allclose(inv_std, rinv, rtol=1e-3)
    np.testing.assert_allclose(y, ry, rtol=1e-3, atol=1e-3)


def test_layer_normalization_matches_onnxruntime():
    rng = _rng()
    x = rng.standard_normal((2, 64, 128)).astype(np.float32)
    scale = rng.standard_normal(128).astype(np.float32)
    bias = rng.standard_normal(128).astype(np.float32)
    expected = _run_onnxruntime(dict(op_type="LayerNormalization", axis=-1, epsilon=1e-5),
                                {"x": x, "scale": scale, "bias": bias}, n_outputs=3)
    for got, want in zip(layer_normalization(np, x, scale, bias), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_layer_normalization_float16_keeps_dtype():
    x = _rng().standard_normal((3, 16)).astype(np.float16)
    y, mean, _ = layer_normalization(np, x, np.ones(16, np.float16), np.zeros(16, np.float16))
    ry, rmean, _ = _layer_norm_float64(x, 1.0, 0.0, 1, 1e-5)
    assert y.dtype == np.float16 and mean.dtype == np.float32
    np.testing.assert_allclose(y, ry, rtol=1e-2, atol=1e-2)


def test_instance_and_group_normalization_match_float64():
    x = _rng().standard_normal((2, 4, 5, 6)).astype(np.float32) + 50
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    (inst,) = instance_normalization(np, x, ones, zeros)
    np.testing.assert_allclose(inst, _layer_norm_float64(x, 1.0, 0.0, 2, 1e-5)[0],
                               rtol=1e-3, atol=1e-3)
    (grouped,) = group_normalization(np, x, ones, zeros, num_groups=2)
    per_group = _layer_norm_float64(x.reshape(2, 2, -1), 1.0, 0.0, 2, 1e-5)[0]
    np.testing.assert_allclose(grouped, per_group.reshape(x.shape), rtol=1e-3, atol=1e-3)


def _softmax_float64(x, axis=-1):
    wide = x.astype(np.float64)
    e = np.exp(wide - wide.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", [(1, 4, 64, 64), (3, 1000), (2, 2048)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_fast_path_matches_float64(shape, dtype):
    x = (_rng().standard_normal(shape) * 4).astype(dtype)
    (got,) = softmax(np, x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, _softmax_float64(x), rtol=1e-5, atol=1e-7)


def test_softmax_non_contiguous_input():
    x = (_rng().standard_normal((64, 48, 2)) * 3).astype(np.float32).T    # (2, 48, 64), F order
    (got,) = softmax(np, x)
    np.testing.assert_allclose(got, _softmax_float64(x), rtol=1e-5, atol=1e-7)


def test_softmax_rows_far_below_the_global_maximum_fall_back():
    x = _rng().standard_normal((64, 64)).astype(np.float32)
    x[3] -= 200       # would underflow to 0 / 0 after a global shift
    x[5] -= 60        # would come out subnormal
    x[7, :10] = -np.inf
    (got,) = softmax(np, x)
    np.testing.assert_allclose(got, _softmax_float64(x), rtol=1e-5, atol=1e-12)


def test_softmax_all_masked_row_and_nan_like_onnxruntime():
    x = _rng().standard_normal((32, 64)).astype(np.float32)
    x[2] = -np.inf
    x[4, 7] = np.nan
    (got,) = softmax(np, x)
    (expected,) = _run_onnxruntime(dict(op_type="Softmax", axis=-1), {"x": x}, opset=13)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-7)


def test_softmax_other_axes_and_flattened_form():
    x = _rng().standard_normal((4, 32, 48)).astype(np.float32)
    np.testing.assert_allclose(softmax(np, x, axis=1)[0], _softmax_float64(x, axis=1),
                               rtol=1e-5, atol=1e-7)
    flat = _softmax_float64(x.reshape(4, -1)).reshape(x.shape)
    np.testing.assert_allclose(softmax_flattened(np, x, axis=1)[0], flat, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_default_cell_matches_onnxruntime(direction, linear_before_reset):
    from modelkit.edge_runtime.kernels.rnn import gru
    rng = _rng()
    n_dir, hidden, steps, batch, features = 1 + (direction == "bidirectional"), 16, 5, 3, 4
    x = rng.standard_normal((steps, batch, features)).astype(np.float32)
    w = rng.standard_normal((n_dir, 3 * hidden, features)).astype(np.float32) * 0.5
    r = rng.standard_normal((n_dir, 3 * hidden, hidden)).astype(np.float32) * 0.3
    b = rng.standard_normal((n_dir, 6 * hidden)).astype(np.float32) * 0.3
    h0 = rng.standard_normal((n_dir, batch, hidden)).astype(np.float32)
    expected = _run_onnxruntime(
        dict(op_type="GRU", hidden_size=hidden, direction=direction,
             linear_before_reset=linear_before_reset),
        {"x": x, "w": w, "r": r, "b": b, "sequence_lens": np.full(batch, steps, np.int32),
         "initial_h": h0}, n_outputs=2, opset=14)
    got = gru(np, x, w, r, b, None, h0, direction=direction,
              linear_before_reset=linear_before_reset)
    for g, e in zip(got, expected):
        assert g.dtype == np.float32 and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    y, y_h = got
    y_h[...] = 0  # the final state is its own array, not a view of Y
    assert np.abs(y).max() > 0


def test_gru_batch_first_layout_matches_time_major():
    from modelkit.edge_runtime.kernels.rnn import gru
    rng = _rng()
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)        # (batch, seq, input)
    w = rng.standard_normal((1, 24, 3)).astype(np.float32)
    r = rng.standard_normal((1, 24, 8)).astype(np.float32) * 0.3
    y, y_h = gru(np, x, w, r, layout=1)
    y_time, y_h_time = gru(np, x.transpose(1, 0, 2).copy(), w, r)
    np.testing.assert_allclose(y, y_time.transpose(2, 0, 1, 3), rtol=1e-6)
    np.testing.assert_allclose(y_h, y_h_time.transpose(1, 0, 2), rtol=1e-6)
