"""The loss, vision, signal, text, misc and ml kernels: their docstring examples, and checks
against independent oracles (PyTorch where it has the op, numpy written here otherwise) beyond
the ONNX backend node cases."""

from __future__ import annotations

import doctest
import importlib
import itertools

import numpy as np
import pytest

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels import loss, misc, ml, quantize, signal, text, vision

MODULES = ["loss", "vision", "signal", "text", "misc", "ml"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"modelkit.edge_runtime.kernels.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("mode,padding_mode,align_corners", [
    *itertools.product(["bilinear", "nearest"], ["zeros", "border", "reflection"], [0, 1]),
    ("bicubic", "zeros", 0), ("bicubic", "zeros", 1)])
def test_grid_sample_matches_torch(torch, mode, padding_mode, align_corners):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    grid = rng.uniform(-1.4, 1.4, (2, 4, 6, 2)).astype(np.float32)  # some points outside
    got = vision.grid_sample(np, x, grid, mode=mode, padding_mode=padding_mode,
                             align_corners=align_corners)[0]
    want = torch.nn.functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode,
                                           padding_mode=padding_mode,
                                           align_corners=bool(align_corners)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_grid_sample_volumetric_matches_torch(torch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (1, 2, 3, 4, 3)).astype(np.float32)
    got = vision.grid_sample(np, x, grid, mode="linear", padding_mode="border")[0]
    want = torch.nn.functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid),
                                           padding_mode="border", align_corners=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 3, 2, 4, 5)])
def test_affine_grid_matches_torch(torch, size, align_corners):
    rank = len(size) - 2
    theta = np.random.default_rng(2).standard_normal((2, rank, rank + 1)).astype(np.float32)
    got = vision.affine_grid(np, theta, np.array(size), align_corners=align_corners)[0]
    want = torch.nn.functional.affine_grid(torch.from_numpy(theta), list(size),
                                           align_corners=bool(align_corners)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ignore_index", [None, 1])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_softmax_cross_entropy_matches_torch(torch, reduction, ignore_index):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((4, 3, 2, 5)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 2, 5))
    weights = rng.uniform(0.5, 2, 3).astype(np.float32)
    got = loss.softmax_cross_entropy_loss(np, scores, labels, weights, reduction=reduction,
                                          ignore_index=ignore_index)[0]
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(weights),
        reduction=reduction, ignore_index=-100 if ignore_index is None else ignore_index).numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_negative_log_likelihood_ignores_out_of_range_index():
    log_probs = np.log(np.float32([[0.2, 0.8], [0.5, 0.5]]))
    got = loss.negative_log_likelihood_loss(np, log_probs, np.array([1, -7]), ignore_index=-7)[0]
    np.testing.assert_allclose(got, -np.log(np.float32(0.8)), rtol=1e-6)


def test_col2im_matches_torch_fold(torch):
    rng = np.random.default_rng(4)
    columns = rng.standard_normal((2, 3 * 2 * 3, 12)).astype(np.float32)
    got = vision.col2im(np, columns, np.array([6, 7]), np.array([2, 3]), strides=[2, 1],
                        pads=[1, 0, 1, 0], dilations=[1, 2])[0]
    want = torch.nn.functional.fold(torch.from_numpy(columns), (6, 7), (2, 3), stride=(2, 1),
                                    padding=(1, 0), dilation=(1, 2)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lrn_matches_torch(torch):
    x = np.random.default_rng(5).standard_normal((2, 7, 3, 3)).astype(np.float32)
    got = vision.lrn(np, x, size=5, alpha=0.01, beta=0.6, bias=2.0)[0]
    want = torch.nn.functional.local_response_norm(torch.from_numpy(x), 5, alpha=0.01, beta=0.6,
                                                   k=2.0).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_non_max_suppression_respects_limit_and_score_threshold():
    boxes = np.float32([[[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]]])
    scores = np.float32([[[0.9, 0.95, 0.2, 0.6]]])
    got = vision.non_max_suppression(np, boxes, scores, np.array([2]), np.float32([0.5]),
                                     np.float32([0.3]))[0]
    np.testing.assert_array_equal(got, [[0, 0, 1], [0, 0, 3]])


def test_roi_align_of_a_linear_ramp_is_the_bin_centre():
    # bilinear interpolation reproduces a linear image exactly, so each bin averages to its centre
    x = np.tile(np.arange(8, dtype=np.float32), (1, 1, 8, 1))  # value = column
    got = vision.roi_align(np, x, np.float32([[1, 1, 5, 5]]), np.array([0]), output_height=2,
                           output_width=2, sampling_ratio=2)[0]
    np.testing.assert_allclose(got[0, 0], [[1.5, 3.5], [1.5, 3.5]], rtol=1e-6)


def _dft_matrix(n, inverse=False):
    k = np.arange(n)
    sign = 1 if inverse else -1
    return np.exp(sign * 2j * np.pi * np.outer(k, k) / n) / (n if inverse else 1)


@pytest.mark.parametrize("inverse", [0, 1])
def test_dft_matches_explicit_sum(inverse):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 8, 2)).astype(np.float32)
    got = signal.dft(np, x, None, np.array(1), inverse=inverse)[0]
    z = x[..., 0].astype(np.float64) + 1j * x[..., 1]
    want = z @ _dft_matrix(8, bool(inverse)).T
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], want, rtol=1e-4, atol=1e-5)


def test_stft_frames_are_windowed_dfts():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 20, 1)).astype(np.float32)
    window = np.hanning(8).astype(np.float32)
    got = signal.stft(np, x, np.array(4), window)[0]
    frames = np.stack([x[:, s:s + 8, 0] * window for s in range(0, 13, 4)], axis=1)
    want = (frames.astype(np.float64) @ _dft_matrix(8).T)[..., :5]
    assert got.shape == (2, 4, 5, 2)
    np.testing.assert_allclose(got[..., 0] + 1j * got[..., 1], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_rotates_feature_pairs(interleaved):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)  # [B, heads, S, head]
    angles = rng.uniform(0, np.pi, (3, 2)).astype(np.float32)
    got = misc.rotary_embedding(np, x, np.cos(angles), np.sin(angles), np.array([[0, 1, 2]]),
                                interleaved=interleaved)[0]
    pairs = (x[..., 0::2] + 1j * x[..., 1::2]) if interleaved else (x[..., :2] + 1j * x[..., 2:])
    turned = pairs * np.exp(1j * angles)[None, None]
    if interleaved:
        want = np.stack([turned.real, turned.imag], axis=-1).reshape(x.shape)
    else:
        want = np.concatenate([turned.real, turned.imag], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cum_prod_exclusive_reverse_along_axis():
    x = np.float32([[1, 2, 3], [4, 5, 6]])
    got = misc.cum_prod(np, x, np.array(1), exclusive=1, reverse=1)[0]
    np.testing.assert_array_equal(got, [[6, 3, 1], [30, 6, 1]])
    assert got.dtype == np.float32


def test_bit_cast_rejects_a_different_width():
    with pytest.raises(KernelError, match="BitCast"):
        misc.bit_cast(np, np.float32([1]), to=7)


def test_string_split_on_whitespace_drops_empty_parts():
    parts, counts = text.string_split(np, np.array([" a  b ", ""], dtype=object))
    assert parts.tolist() == [["a", "b"], ["", ""]] and counts.tolist() == [2, 0]


def test_tf_idf_vectorizer_counts_skip_grams_of_strings():
    tokens = np.array([["a", "b", "x", "b"]], dtype=object)
    got = text.tf_idf_vectorizer(np, tokens, mode="TFIDF", min_gram_length=1, max_gram_length=2,
                                 max_skip_count=1, ngram_counts=[0, 1], ngram_indexes=[0, 1],
                                 pool_strings=["b", "a", "b"], weights=[1.0, 10.0])[0]
    # "b" twice; "a b" at skip 0 (positions 0, 1) and skip 1 (positions 0, 2 read "a x": no)
    np.testing.assert_array_equal(got, [[2.0, 10.0]])


def _onnx_reference(op, inputs, opset, domain="", **attrs):
    """Run one node in onnx's reference evaluator (an independent implementation)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, ["out"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in zip(names, inputs)],
        [helper.make_value_info("out", onnx.TypeProto())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid(domain, opset)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("center_point_box", [0, 1])
def test_non_max_suppression_matches_onnx_reference_on_many_boxes(center_point_box):
    rng = np.random.default_rng(9)
    boxes = rng.uniform(0, 50, (2, 300, 4)).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 3, 300)).astype(np.float32)
    inputs = [boxes, scores, np.array([40]), np.float32([0.3]), np.float32([0.2])]
    got = vision.non_max_suppression(np, *inputs, center_point_box=center_point_box)[0]
    want = _onnx_reference("NonMaxSuppression", inputs, 11, center_point_box=center_point_box)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_matches_onnx_reference_with_adaptive_sampling(mode):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    corner = rng.uniform(-2, 8, (6, 2))
    rois = np.concatenate([corner, corner + rng.uniform(0.5, 9, (6, 2))], axis=1).astype(np.float32)
    batches = rng.integers(0, 2, 6)
    attrs = {"mode": mode, "output_height": 3, "output_width": 2, "spatial_scale": 0.9}
    got = vision.roi_align(np, x, rois, batches, **attrs)[0]
    want = _onnx_reference("RoiAlign", [x, rois, batches], 16, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_negative_log_likelihood_rejects_a_class_index_out_of_range():
    with pytest.raises(KernelError, match=r"NegativeLogLikelihoodLoss: target .* outside \[0, 2\)"):
        loss.negative_log_likelihood_loss(np, np.zeros((1, 2), np.float32), np.array([2]))


def test_tf_idf_vectorizer_matches_brute_force_counts():
    rng = np.random.default_rng(11)
    rows = rng.integers(0, 6, (3, 12))
    unigrams, bigrams = [1, 4], [(2, 3), (0, 5), (5, 5), (1, 1)]
    pool = unigrams + [t for gram in bigrams for t in gram]
    got = text.tf_idf_vectorizer(np, rows, mode="TF", min_gram_length=1, max_gram_length=2,
                                 max_skip_count=2, ngram_counts=[0, 2],
                                 ngram_indexes=list(range(6)), pool_int64s=pool)[0]
    want = np.zeros((3, 6), np.float32)
    for r, row in enumerate(rows.tolist()):
        for i, token in enumerate(unigrams):
            want[r, i] = row.count(token)
        for j, gram in enumerate(bigrams):
            want[r, 2 + j] = sum(tuple(row[s:s + skip + 2:skip + 1]) == gram
                                 for skip in range(3) for s in range(12 - skip - 1))
    np.testing.assert_array_equal(got, want)


def test_linear_attention_linear_rule_matches_cumulative_sum_with_grouped_heads():
    rng = np.random.default_rng(12)
    b, t, q_heads, kv_heads, d = 2, 5, 4, 2, 3
    q = rng.standard_normal((b, t, q_heads * d)).astype(np.float32)
    k = rng.standard_normal((b, t, kv_heads * d)).astype(np.float32)
    v = rng.standard_normal((b, t, kv_heads * d)).astype(np.float32)
    past = rng.standard_normal((b, kv_heads, d, d)).astype(np.float32)
    out, state = misc.linear_attention(np, q, k, v, past, q_num_heads=q_heads,
                                       kv_num_heads=kv_heads, update_rule="linear", scale=0.5)
    heads = lambda x, h: x.reshape(b, t, h, d).astype(np.float64)  # noqa: E731
    outer = np.einsum("bthd,bthe->bthde", heads(k, kv_heads), heads(v, kv_heads))
    states = past[:, None].astype(np.float64) + np.cumsum(outer, axis=1)  # [b, t, kv, d, d]
    shared = np.repeat(states, q_heads // kv_heads, axis=2)  # query head h reads kv head h // 2
    want = 0.5 * np.einsum("bthd,bthde->bthe", heads(q, q_heads), shared).reshape(b, t, -1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state, states[:, -1], rtol=1e-4, atol=1e-5)


def test_tensor_scatter_circular_follows_the_spec_pseudocode():
    rng = np.random.default_rng(13)
    past = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    update = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    write = np.array([1, 4])
    got = misc.tensor_scatter(np, past, update, write, mode="circular")[0]
    want = past.copy()
    for batch, head in np.ndindex(2, 3):
        for s in range(3):
            want[batch, head, (write[batch] + s) % 5] = update[batch, head, s]
    np.testing.assert_array_equal(got, want)


def test_tensor_scatter_linear_refuses_to_write_past_the_end():
    with pytest.raises(KernelError, match="TensorScatter: writes reach index 5"):
        misc.tensor_scatter(np, np.zeros((1, 5, 2)), np.ones((1, 2, 2)), np.array([4]), axis=1)


def test_det_matches_the_two_by_two_formula():
    m = np.random.default_rng(14).standard_normal((3, 2, 2)).astype(np.float32)
    got = misc.det(np, m)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0], rtol=1e-5)


def test_dynamic_quantize_linear_round_trips_within_half_a_step():
    x = np.random.default_rng(15).uniform(-3, 5, 100).astype(np.float32)
    y, scale, zero_point = quantize.dynamic_quantize_linear(np, x)
    restored = (y.astype(np.float32) - zero_point.astype(np.float32)) * scale
    assert y.dtype == np.uint8 and scale.dtype == np.float32
    assert np.abs(restored - x).max() <= scale / 2 + 1e-6


@pytest.mark.parametrize("kernel,numpy_window", [(signal.hann_window, np.hanning),
                                                 (signal.blackman_window, np.blackman)])
def test_symmetric_windows_match_numpy(kernel, numpy_window):
    got = kernel(np, np.array(9), periodic=0)[0]
    np.testing.assert_allclose(got, numpy_window(9), atol=1e-6)


def test_flex_attention_shares_kv_heads_across_query_groups():
    rng = np.random.default_rng(16)
    q = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    k = rng.standard_normal((2, 2, 6, 5)).astype(np.float32)
    v = rng.standard_normal((2, 2, 6, 7)).astype(np.float32)
    got = misc.flex_attention(np, q, k, v)[0]
    k_full, v_full = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    scores = q.astype(np.float64) @ k_full.transpose(0, 1, 3, 2) / np.sqrt(5)
    probs = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)
    assert got.dtype == np.float32 and got.shape == (2, 4, 3, 7)
    np.testing.assert_allclose(got, probs @ v_full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregate_function", [0, 1, 2, 3])
def test_tree_ensemble_matches_onnx_reference(aggregate_function):
    # two trees over 3 features: tree 0 = nodes 0-2, tree 1 = node 3 (a stump)
    attrs = dict(
        nodes_splits=np.array([0.0, -0.5, 0.7, 0.1]), nodes_featureids=[0, 1, 2, 1],
        nodes_modes=np.array([0, 3, 1, 2], dtype=np.uint8), nodes_truenodeids=[1, 0, 2, 4],
        nodes_falsenodeids=[2, 1, 3, 5], nodes_trueleafs=[0, 1, 1, 1],
        nodes_falseleafs=[0, 1, 1, 1], leaf_targetids=[0, 1, 1, 0, 1, 0],
        leaf_weights=np.array([1.0, 2.0, -3.0, 4.0, 5.0, -6.0]), tree_roots=[0, 3],
        n_targets=2, aggregate_function=aggregate_function)
    x = np.random.default_rng(17).standard_normal((20, 3)).astype(np.float32)
    got = ml.tree_ensemble(np, x, **attrs)[0]
    want = _onnx_reference("TreeEnsemble", [x], 5, domain="ai.onnx.ml", **attrs)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
