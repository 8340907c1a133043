"""The training fast paths against independent numpy oracles: Adam's cache-sized chunks on
large parameters, and the tiling MaxPool backward (first maximum wins ties, as in PyTorch;
the output may be modified in place afterwards)."""

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring import nn, optim
from modelkit.authoring.nn import functional as F
from modelkit.authoring.optim import adam


def _numpy_adam(start, grads, lr, amsgrad, b1=0.9, b2=0.999, eps=1e-8):
    p, m, v, v_max = start.astype(np.float64), 0.0, 0.0, 0.0
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = np.maximum(v_max, v)
        second = v_max if amsgrad else v
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(second / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_on_a_parameter_larger_than_a_chunk_matches_numpy(amsgrad):
    rng = np.random.default_rng(0)
    shape = (3, adam._CHUNK // 2 + 7)  # two whole chunks and a ragged tail
    start = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    p = nn.Parameter(mk.tensor(start.copy()))
    opt = optim.Adam([p], lr=1e-2, amsgrad=amsgrad)
    for g in grads:
        p.grad = mk.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), _numpy_adam(start, grads, 1e-2, amsgrad),
                               rtol=1e-5, atol=1e-6)


def _first_max_grad(x, g, k):
    """dL/dx of a k x k / k MaxPool, window by window: g goes to the first maximum."""
    gx = np.zeros_like(x)
    n, c, h, w = x.shape
    for i in range(n):
        for j in range(c):
            for r in range(h // k):
                for s in range(w // k):
                    window = x[i, j, r * k:(r + 1) * k, s * k:(s + 1) * k]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    gx[i, j, r * k + a, s * k + b] = g[i, j, r, s]
    return gx


def test_tiling_max_pool_backward_sends_ties_to_the_first_maximum():
    rng = np.random.default_rng(1)
    # relu'd noise rounded to a coarse grid: many windows hold several equal maxima (zeros)
    x_np = np.maximum(np.round(rng.standard_normal((2, 3, 6, 4)), 0), 0).astype(np.float32)
    x = mk.tensor(x_np, requires_grad=True)
    y = F.max_pool2d(x, 2)
    assert y.shape == (2, 3, 3, 2)
    g_np = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(mk.tensor(g_np))
    np.testing.assert_array_equal(x.grad.numpy(), _first_max_grad(x_np, g_np, 2))


def test_tiling_max_pool_backward_survives_an_in_place_change_of_its_output():
    x_np = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    x = mk.tensor(x_np, requires_grad=True)
    y = F.max_pool2d(x, 2)
    with mk.no_grad():  # writes into y's array (with a graph recorded it would rebind y)
        y.add_(100.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), _first_max_grad(x_np, np.ones((1, 2, 2, 2),
                                                                                np.float32), 2))
