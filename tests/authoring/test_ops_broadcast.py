"""Property tests: broadcasting binary ops on random shapes (size-1 dims, missing leading
dims) against numpy, and their gradients reduced back onto each input's shape."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import modelkit.authoring as mk

BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: (np.ones_like(a), np.ones_like(b))),
    "sub": (lambda a, b: a - b, lambda a, b: (np.ones_like(a), -np.ones_like(b))),
    "mul": (lambda a, b: a * b, lambda a, b: (b, a)),
    "div": (lambda a, b: a / b, lambda a, b: (1 / b, -a / b ** 2)),
}


def _reduce_to(grad, shape):
    """Sum a broadcast gradient back onto `shape`, written independently of the library."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


@settings(max_examples=40, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
       name=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2 ** 16))
def test_broadcast_binary_forward_and_gradients(shapes, name, seed):
    shape_a, shape_b = shapes.input_shapes
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, shape_a).astype(np.float32)
    b = rng.uniform(0.5, 2.0, shape_b).astype(np.float32)
    forward, local_grads = BINARY[name]
    ta, tb = mk.tensor(a, requires_grad=True), mk.tensor(b, requires_grad=True)
    out = forward(ta, tb)
    want = forward(a, b)
    assert tuple(out.shape) == np.shape(want) and out.dtype == mk.float32
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-6)
    out.sum().backward()
    da, db = (np.broadcast_to(g, np.shape(want)) for g in local_grads(a, b))
    np.testing.assert_allclose(ta.grad.numpy(), _reduce_to(da, shape_a), rtol=1e-5)
    np.testing.assert_allclose(tb.grad.numpy(), _reduce_to(db, shape_b), rtol=1e-5)
