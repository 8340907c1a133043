"""nn.functional forward values against numpy written here (naive loops for convolution and
pooling), running-statistics updates, dropout behaviour."""

import numpy as np
import pytest

import modelkit.authoring as mk
import modelkit.authoring.nn.functional as F
from modelkit.authoring.errors import ShapeError

from helpers_authoring import random_inputs


def _conv2d_reference(x, w, b, stride, pad, dilation, groups):
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, m, oh, ow))
    for o in range(m):
        g = o // (m // groups)
        for i in range(oh):
            for j in range(ow):
                patch = x[:, g * cg:(g + 1) * cg,
                          i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                          j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return out + (0 if b is None else b[None, :, None, None])


@pytest.mark.parametrize("stride,padding,dilation,groups,pad4", [
    (1, 0, 1, 1, (0, 0, 0, 0)),
    (2, 1, 1, 1, (1, 1, 1, 1)),
    (1, "same", 2, 2, (2, 1, 2, 1)),
    ((2, 1), (0, 2), 1, 4, (0, 2, 0, 2)),
])
def test_conv2d_matches_naive_loops(stride, padding, dilation, groups, pad4):
    x, w, b = random_inputs([(2, 4, 7, 6), (8, 4 // groups, 3, 2), (8,)], dtype=np.float32)
    got = F.conv2d(mk.tensor(x), mk.tensor(w), mk.tensor(b), stride, padding, dilation, groups)
    s = (stride, stride) if isinstance(stride, int) else stride
    want = _conv2d_reference(x.astype(np.float64), w, b, s, pad4, (dilation, dilation), groups)
    assert got.dtype == mk.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=1e-4)


def test_conv1d_and_conv_transpose2d_against_references():
    x, w = random_inputs([(2, 3, 9), (4, 3, 3)], dtype=np.float32)
    got = F.conv1d(mk.tensor(x), mk.tensor(w), stride=2, padding=1)
    want = _conv2d_reference(x[:, :, None, :].astype(np.float64), w[:, :, None, :], None,
                             (1, 2), (0, 1, 0, 1), (1, 1), 1)[:, :, 0, :]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    # conv_transpose2d is the adjoint of conv2d: <conv(x), y> == <x, conv_transpose(y)>
    x, w, y = random_inputs([(1, 2, 7, 7), (3, 2, 3, 3), (1, 3, 4, 4)], dtype=np.float64)
    conv_x = F.conv2d(mk.tensor(x), mk.tensor(w), stride=2, padding=1)
    tconv_y = F.conv_transpose2d(mk.tensor(y), mk.tensor(w), stride=2, padding=1)
    assert conv_x.shape == (1, 3, 4, 4) and tconv_y.shape == (1, 2, 7, 7)
    np.testing.assert_allclose((conv_x.numpy() * y).sum(), (x * tconv_y.numpy()).sum(),
                               rtol=1e-10)
    assert F.conv_transpose2d(mk.tensor(y), mk.tensor(w), stride=2, padding=1,
                              output_padding=1).shape == (1, 2, 8, 8)


def _pool_reference(x, k, s, pad, reduce, fill):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return np.stack([np.stack([reduce(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
                               for j in range(ow)], -1) for i in range(oh)], -2)


def test_pooling_matches_naive_loops():
    (x,) = random_inputs([(2, 3, 7, 6)], dtype=np.float32)
    t = mk.tensor(x)
    np.testing.assert_allclose(F.max_pool2d(t, 3, 2, 1).numpy(),
                               _pool_reference(x, 3, 2, 1, np.max, -np.inf))
    np.testing.assert_allclose(F.avg_pool2d(t, 2).numpy(),
                               _pool_reference(x, 2, 2, 0, np.mean, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(F.avg_pool2d(t, 3, 2, 1).numpy(),  # padding counted (default)
                               _pool_reference(x, 3, 2, 1, np.mean, 0), rtol=1e-6, atol=1e-7)
    counts = _pool_reference(np.ones_like(x), 3, 2, 1, np.sum, 0)
    np.testing.assert_allclose(F.avg_pool2d(t, 3, 2, 1, count_include_pad=False).numpy(),
                               _pool_reference(x, 3, 2, 1, np.sum, 0) / counts, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(t, 1).numpy(),
                               x.mean(axis=(2, 3), keepdims=True), rtol=1e-6, atol=1e-7)
    uneven = F.adaptive_avg_pool2d(t, (3, 4)).numpy()  # bins [0,3) [2,5) [4,7) x [0,2) ...
    np.testing.assert_allclose(uneven[:, :, 1, 1], x[:, :, 2:5, 1:3].mean(axis=(2, 3)),
                               rtol=1e-6, atol=1e-7)
    assert F.max_pool2d(mk.tensor(x[0]), 2).shape == (3, 3, 3)  # unbatched input


def test_batch_norm_training_updates_running_stats_like_pytorch():
    (x,) = random_inputs([(8, 3, 4)], dtype=np.float32)
    mean, var = mk.zeros(3), mk.ones(3)
    w, b = mk.tensor([1.0, 2.0, 0.5]), mk.tensor([0.0, 1.0, -1.0])
    y = F.batch_norm(mk.tensor(x), mean, var, w, b, training=True, momentum=0.1, eps=1e-5)
    batch_mean, batch_var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    want = (x - batch_mean[None, :, None]) / np.sqrt(batch_var[None, :, None] + 1e-5)
    want = want * w.numpy()[None, :, None] + b.numpy()[None, :, None]
    np.testing.assert_allclose(y.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), 0.1 * batch_mean, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), 0.9 + 0.1 * x.var(axis=(0, 2), ddof=1), atol=1e-6)
    evaluated = F.batch_norm(mk.tensor(x), mean, var, w, b, training=False)
    want_eval = (x - mean.numpy()[None, :, None]) / np.sqrt(var.numpy()[None, :, None] + 1e-5)
    np.testing.assert_allclose(evaluated.numpy(), want_eval * w.numpy()[None, :, None]
                               + b.numpy()[None, :, None], atol=1e-5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(mk.ones(1, 3), mean, var, training=True)


def test_layer_norm_and_group_norm_match_numpy():
    (x,) = random_inputs([(2, 4, 3)], dtype=np.float32)
    y = F.layer_norm(mk.tensor(x), (4, 3), eps=1e-5).numpy()
    flat = x.reshape(2, -1)
    want = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want.reshape(x.shape), atol=1e-5)
    w, b = mk.tensor([1.0, 2.0, 3.0, 4.0]), mk.tensor([0.5, 0.0, 0.0, -0.5])
    g = F.group_norm(mk.tensor(x), 2, w, b).numpy()
    grouped = x.reshape(2, 2, -1)
    norm = ((grouped - grouped.mean(-1, keepdims=True)) /
            np.sqrt(grouped.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(g, norm * w.numpy()[None, :, None] + b.numpy()[None, :, None],
                               atol=1e-5)
    with pytest.raises(ShapeError, match="normalized_shape"):
        F.layer_norm(mk.tensor(x), (4,))


def test_softmax_family_matches_numpy():
    (x,) = random_inputs([(3, 5)], dtype=np.float32)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(F.softmax(mk.tensor(x), dim=1).numpy(),
                               e / e.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(F.log_softmax(mk.tensor(x), dim=-1).numpy(),
                               np.log(e / e.sum(1, keepdims=True)), rtol=1e-5, atol=1e-6)
    big = mk.tensor([[1000.0, 0.0]])
    assert F.softmax(big, dim=1).tolist() == [[1.0, 0.0]]


def test_dropout_scales_kept_values_and_is_seeded():
    x = mk.ones(1000)
    mk.manual_seed(5)
    a = F.dropout(x, 0.25)
    kept = a.numpy() != 0
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_allclose(a.numpy()[kept], 1 / 0.75)
    mk.manual_seed(5)
    assert np.array_equal(F.dropout(x, 0.25).numpy(), a.numpy())
    assert F.dropout(x, 0.25, training=False) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


def test_pad_modes_match_numpy():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    t = mk.tensor(x)
    np.testing.assert_array_equal(F.pad(t, (1, 2), value=-1).numpy(),
                                  np.pad(x, ((0, 0), (0, 0), (1, 2)), constant_values=-1))
    np.testing.assert_array_equal(F.pad(t, (2, 1, 1, 1), mode="reflect").numpy(),
                                  np.pad(x, ((0, 0), (1, 1), (2, 1)), mode="reflect"))
    np.testing.assert_array_equal(F.pad(t, (1, 1), mode="replicate").numpy(),
                                  np.pad(x, ((0, 0), (0, 0), (1, 1)), mode="edge"))
    np.testing.assert_array_equal(F.pad(t, (1, 2), mode="circular").numpy(),
                                  np.pad(x, ((0, 0), (0, 0), (1, 2)), mode="wrap"))


def test_unbatched_conv_input():
    x, w = random_inputs([(2, 5, 5), (3, 2, 3, 3)], dtype=np.float32)
    batched = F.conv2d(mk.tensor(x[None]), mk.tensor(w), padding=1)
    np.testing.assert_allclose(F.conv2d(mk.tensor(x), mk.tensor(w), padding=1).numpy(),
                               batched.numpy()[0])


def test_conv_errors_name_shapes():
    with pytest.raises(ShapeError, match=r"expected input\[1, 3, 5, 5\] to have 4 channels"):
        F.conv2d(mk.ones(1, 3, 5, 5), mk.ones(2, 4, 3, 3))
    with pytest.raises(ShapeError, match=r"kernel size \(3, 3\).*input shape \(1, 1, 2, 2\)"):
        F.conv2d(mk.ones(1, 1, 2, 2), mk.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="'same' is not supported for strided"):
        F.conv2d(mk.ones(1, 1, 4, 4), mk.ones(1, 1, 3, 3), stride=2, padding="same")
