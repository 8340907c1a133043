"""Shared helpers for the authoring op tests, in the spirit of tinygrad's helper_test_op:
forward against numpy written in the test, gradients against float64 central differences."""

from __future__ import annotations

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring.ops import registry


def random_inputs(shapes, *, seed=0, low=-2.0, high=2.0, dtype=np.float64):
    """Random arrays of `shapes`, values in [low, high), away from 0 by at least 0.05 so kinks
    (abs, relu, sign...) are not sampled."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in shapes:
        a = rng.uniform(low, high, size=shape)
        a = np.where(np.abs(a) < 0.05, 0.05 + np.abs(a), a)
        arrays.append(a.astype(dtype))
    return arrays


def check_forward(mk_fn, np_fn, arrays, *, atol=1e-5, rtol=1e-5, dtype=np.float32):
    """mk_fn on Tensors of `arrays` (cast to dtype) matches np_fn on the same arrays, in dtype."""
    arrays = [a.astype(dtype) for a in arrays]
    got = mk_fn(*[mk.tensor(a) for a in arrays])
    want = np_fn(*arrays)
    assert got.dtype == mk.dtypes.from_numpy(np.asarray(want).dtype), (got.dtype, want.dtype)
    assert tuple(got.shape) == np.shape(want), (tuple(got.shape), np.shape(want))
    np.testing.assert_allclose(got.numpy(), want, atol=atol, rtol=rtol)


def check_grad(mk_fn, arrays, *, eps=1e-6, atol=1e-5, rtol=1e-3):
    """gradcheck of mk_fn in float64 with every input requiring grad."""
    inputs = [mk.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    assert mk.autograd.gradcheck(mk_fn, inputs, eps=eps, atol=atol, rtol=rtol)


def ops_used(fn, arrays) -> set:
    """Names of the primitives `fn` calls on Tensors of `arrays` (via the tracer hook)."""
    seen = set()
    registry.tracer = lambda op, inputs, attrs, outputs: seen.add(op.name)
    try:
        fn(*[mk.tensor(a, requires_grad=True) for a in arrays])
    finally:
        registry.tracer = None
    return seen
