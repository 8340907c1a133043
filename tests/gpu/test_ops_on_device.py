"""Every differentiable primitive, forward and backward, on each device: float32 results on the
device against a float64 cpu reference, and on cuda against the float32 cpu result (1e-5
relative, the issue's bar). Index tensors a case needs are made on the case's device."""

from __future__ import annotations

import numpy as np
import pytest

import modelkit.authoring as mk
import modelkit.authoring.nn.functional as F
from modelkit.authoring.ops import registry
from modelkit.authoring.ops.registry import OPS

from gpu_marks import DEVICES, needs_cuda

POSITIVE = dict(low=0.2, high=2.0)


def _index(d, values):
    return mk.tensor(values, device=d)


def _setitem(d, x, v):
    y = x * 1
    y[0, 1:] = v
    return y


def _round_trip(d, a):
    """To the cpu and back through the primitive itself (`.to` skips it when nothing moves)."""
    on_cpu = registry.apply(OPS["to_device"], a, device=mk.device("cpu"))
    return registry.apply(OPS["to_device"], on_cpu, device=mk.device(d))


def _bn_eval(d, x, w, b):
    mean = mk.tensor([0.1, -0.2, 0.3], dtype=x.dtype, device=d)
    var = mk.tensor([0.5, 1.5, 2.0], dtype=x.dtype, device=d)
    return F.batch_norm(x, mean, var, w, b, training=False)


# (case id, fn(device, *inputs), input shapes, input options)
CASES = [
    ("add", lambda d, a, b: a + b, [(2, 3), (3,)], {}),
    ("add-alpha", lambda d, a, b: mk.add(a, b, alpha=2), [(2, 1, 3), (4, 1)], {}),
    ("sub", lambda d, a, b: a - b, [(2, 3), (2, 1)], {}),
    ("rsub-scalar", lambda d, a: 1.5 - a, [(3,)], {}),
    ("mul", lambda d, a, b: a * b, [(4, 1), (1, 3)], {}),
    ("div", lambda d, a, b: a / b, [(2, 3), (3,)], POSITIVE),
    ("pow", lambda d, a, b: a ** b, [(2, 3), (1, 3)], POSITIVE),
    ("pow-scalar", lambda d, a: a ** 3, [(5,)], {}),
    ("maximum", lambda d, a, b: mk.maximum(a, b), [(2, 3), (3,)], {}),
    ("minimum", lambda d, a, b: mk.minimum(a, b), [(1, 3), (2, 1)], {}),
    ("remainder", lambda d, a, b: mk.remainder(a, b), [(2, 3), (3,)], POSITIVE),
    ("neg", lambda d, a: -a, [(2, 3)], {}),
    ("exp", lambda d, a: mk.exp(a), [(2, 3)], {}),
    ("log", lambda d, a: mk.log(a), [(2, 3)], POSITIVE),
    ("log1p", lambda d, a: mk.log1p(a), [(4,)], POSITIVE),
    ("sqrt", lambda d, a: mk.sqrt(a), [(2, 2)], POSITIVE),
    ("rsqrt", lambda d, a: mk.rsqrt(a), [(3,)], POSITIVE),
    ("reciprocal", lambda d, a: mk.reciprocal(a), [(3, 1)], POSITIVE),
    ("abs", lambda d, a: mk.abs(a), [(2, 3)], {}),
    ("sign-floor-ceil-round", lambda d, a: mk.sign(a) + mk.floor(a) + mk.ceil(a) + mk.round(a)
     + a, [(4,)], {}),
    ("sin-cos", lambda d, a: mk.sin(a) * mk.cos(a), [(2, 3)], {}),
    ("tanh-sigmoid", lambda d, a: mk.tanh(a) + mk.sigmoid(a), [(2, 3)], {}),
    ("relu", lambda d, a: mk.relu(a), [(2, 3)], {}),
    ("leaky_relu", lambda d, a: F.leaky_relu(a, 0.2), [(2, 3)], {}),
    ("gelu", lambda d, a: F.gelu(a), [(2, 3)], {}),
    ("gelu-tanh", lambda d, a: F.gelu(a, approximate="tanh"), [(2, 3)], {}),
    ("silu-softplus", lambda d, a: F.silu(a) + F.softplus(a), [(2, 3)], {}),
    ("erf", lambda d, a: mk.erf(a), [(2, 3)], {}),
    ("clamp", lambda d, a: mk.clamp(a, -1.0, 1.0), [(2, 3)], {}),
    ("cast", lambda d, a: a.to(mk.float64).to(a.dtype) * 2, [(3,)], {}),
    ("where", lambda d, a, b: mk.where(a > 0, a, b), [(2, 3), (3,)], {}),
    ("masked_fill", lambda d, a: a.masked_fill(a > 1, 0.5), [(2, 3)], {}),
    ("sum-mean", lambda d, a: a.sum(dim=1) + a.mean(dim=1), [(2, 3)], {}),
    ("amax-amin", lambda d, a: a.amax(dim=0) + a.amin(dim=0), [(3, 2)], {}),
    ("max-min", lambda d, a: a.max() + a.min(), [(3, 2)], {}),
    ("prod", lambda d, a: a.prod(dim=1), [(2, 3)], {}),
    ("var-std", lambda d, a: a.var(dim=1) + a.std(), [(2, 4)], {}),
    ("logsumexp", lambda d, a: mk.logsumexp(a, dim=1), [(2, 3)], {}),
    ("cumsum", lambda d, a: a.cumsum(dim=1), [(2, 3)], {}),
    ("to_device", lambda d, a: _round_trip(d, a) * 2, [(2, 3)], {}),
    ("reshape-flatten", lambda d, a: a.reshape(3, 2).flatten(), [(2, 3)], {}),
    ("squeeze-unsqueeze", lambda d, a: a.squeeze(1).unsqueeze(-1), [(2, 1, 3)], {}),
    ("clone", lambda d, a: mk.clone(a), [(2, 3)], {}),
    ("permute", lambda d, a: a.permute(2, 0, 1), [(2, 3, 1)], {}),
    ("transpose", lambda d, a: a.transpose(0, 1), [(2, 3)], {}),
    ("expand", lambda d, a: a.expand(2, 3, 4), [(3, 1)], {}),
    ("cat", lambda d, a, b: mk.cat([a, b], dim=1), [(2, 3), (2, 1)], {}),
    ("stack", lambda d, a, b: mk.stack([a, b], dim=1), [(2, 3), (2, 3)], {}),
    ("split-chunk", lambda d, a: a.split([1, 2], dim=1)[1].sum() + a.chunk(3, 1)[0].sum(),
     [(2, 3)], {}),
    ("repeat", lambda d, a: a.repeat(2, 1, 3), [(2, 2)], {}),
    ("pad-constant", lambda d, a: F.pad(a, (1, 2, 0, 1), value=0.5), [(2, 3)], {}),
    ("pad-reflect", lambda d, a: F.pad(a, (2, 1), mode="reflect"), [(1, 2, 4)], {}),
    ("pad-replicate", lambda d, a: F.pad(a, (1, 1, 2, 0), mode="replicate"), [(1, 2, 3)], {}),
    ("pad-circular", lambda d, a: F.pad(a, (1, 2), mode="circular"), [(2, 3)], {}),
    ("index-basic", lambda d, a: a[1:, None, ::2], [(3, 4)], {}),
    ("index-repeated", lambda d, a: a[_index(d, [0, 2, 0, 0])], [(3, 2)], {}),
    ("index-bool", lambda d, a: a[a > 0], [(3, 3)], {}),
    ("index_put", _setitem, [(2, 3), (2,)], {}),
    ("index_select", lambda d, a: a.index_select(1, _index(d, [2, 0, 2])), [(2, 3)], {}),
    ("gather", lambda d, a: a.gather(1, _index(d, [[0, 0], [2, 1]])), [(2, 3)], {}),
    ("embedding", lambda d, w: F.embedding(_index(d, [[0, 2], [2, 2]]), w, padding_idx=1),
     [(3, 2)], {}),
    ("matmul", lambda d, a, b: a @ b, [(2, 3), (3, 4)], {}),
    ("matmul-batched", lambda d, a, b: a @ b, [(2, 1, 2, 3), (3, 3, 2)], {}),
    ("matmul-vector", lambda d, a, b: a @ b, [(3,), (2, 3, 2)], {}),
    ("linear", lambda d, x, w, b: F.linear(x, w, b), [(2, 3), (4, 3), (4,)], {}),
    ("linear-3d", lambda d, x, w: F.linear(x, w), [(2, 2, 3), (2, 3)], {}),
    ("softmax", lambda d, a: F.softmax(a, dim=1), [(2, 3)], {}),
    ("log_softmax", lambda d, a: F.log_softmax(a, dim=0), [(3, 2)], {}),
    ("conv1d", lambda d, x, w, b: F.conv1d(x, w, b, stride=2, padding=1),
     [(2, 2, 5), (3, 2, 3), (3,)], {}),
    ("conv2d", lambda d, x, w: F.conv2d(x, w, padding="same", dilation=2),
     [(1, 2, 4, 4), (2, 2, 2, 3)], {}),
    ("conv2d-groups", lambda d, x, w, b: F.conv2d(x, w, b, stride=(2, 1), groups=2),
     [(1, 4, 5, 3), (2, 2, 2, 2), (2,)], {}),
    ("conv_transpose2d", lambda d, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1,
                                                               output_padding=1),
     [(1, 2, 3, 2), (2, 3, 3, 3), (3,)], {}),
    ("max_pool2d", lambda d, x: F.max_pool2d(x, 3, stride=2, padding=1), [(2, 1, 5, 4)], {}),
    ("avg_pool2d", lambda d, x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
     [(1, 1, 5, 5)], {}),
    ("adaptive_avg_pool2d", lambda d, x: F.adaptive_avg_pool2d(x, (2, 3)), [(1, 2, 5, 4)], {}),
    ("batch_norm-train", lambda d, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     [(4, 3, 2), (3,), (3,)], {}),
    ("batch_norm-eval", _bn_eval, [(2, 3, 2, 2), (3,), (3,)], {}),
    ("layer_norm", lambda d, x, w, b: F.layer_norm(x, (3,), w, b), [(2, 3), (3,), (3,)], {}),
    ("group_norm", lambda d, x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3), (4,), (4,)], {}),
]
RANDOM_OPS = {"dropout"}
"""Ops whose result depends on the device's generator; checked by their own test below."""


def _inputs(shapes, seed, low=-2.0, high=2.0):
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in shapes:
        a = rng.uniform(low, high, size=shape)
        arrays.append(np.where(np.abs(a) < 0.05, 0.05 + np.abs(a), a))  # away from kinks
    return arrays


def _run(fn, arrays, dtype, device):
    """Forward value and input gradients (as host float64 arrays) of sum(fn * fixed weights)."""
    inputs = [mk.tensor(a.astype(dtype), device=device, requires_grad=True) for a in arrays]
    out = fn(device, *inputs)
    weights = mk.tensor(np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape)),
                        dtype=out.dtype, device=device)
    (out * weights).sum().backward()
    host = lambda t: t.detach().cpu().numpy().astype(np.float64)  # noqa: E731
    return host(out), [host(t.grad) if t.grad is not None else None for t in inputs]


def _assert_close(got, want, rtol, atol, what):
    out_got, grads_got = got
    out_want, grads_want = want
    np.testing.assert_allclose(out_got, out_want, rtol=rtol, atol=atol, err_msg=f"{what}: output")
    for i, (g, w) in enumerate(zip(grads_got, grads_want)):
        assert (g is None) == (w is None), f"{what}: gradient {i} missing on one side"
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what}: grad {i}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_forward_and_backward_on_device(case, device):
    name, fn, shapes, options = case
    arrays = _inputs(shapes, seed=len(name), **options)
    reference = _run(fn, arrays, np.float64, "cpu")
    on_device = _run(fn, arrays, np.float32, device)
    _assert_close(on_device, reference, rtol=1e-4, atol=1e-5, what=f"{name} on {device} vs float64")
    if device != "cpu":
        _assert_close(on_device, _run(fn, arrays, np.float32, "cpu"), rtol=1e-5, atol=1e-6,
                      what=f"{name} on {device} vs cpu float32")


@needs_cuda
def test_dropout_on_cuda_keeps_about_1_minus_p_and_scales_the_rest():
    mk.manual_seed(0)
    x = mk.ones(100_000, device="cuda", requires_grad=True)
    y = F.dropout(x, 0.25)
    kept = y.detach().cpu().numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.01 and np.allclose(y.detach().cpu().numpy()[kept], 4 / 3)
    y.sum().backward()
    assert np.array_equal(x.grad.cpu().numpy() != 0, kept)
    mk.manual_seed(0)
    assert np.array_equal(F.dropout(x, 0.25).detach().cpu().numpy() != 0, kept)  # seeded


def test_every_differentiable_op_has_a_device_case():
    seen = set()
    registry.tracer = lambda op, inputs, attrs, outputs: seen.add(op.name)
    try:
        for name, fn, shapes, options in CASES:
            fn("cpu", *[mk.tensor(a.astype(np.float32), requires_grad=True)
                        for a in _inputs(shapes, seed=0, **options)])
    finally:
        registry.tracer = None
    differentiable = {name for name, op in OPS.items() if op.differentiable}
    assert sorted(differentiable - seen - RANDOM_OPS) == []
