"""Parity with PyTorch (when installed): forward values and gradients on random inputs.
Each case is written once against the shared API: `fn(lib, F, *tensors)` with lib = torch or
modelkit.authoring and F its nn.functional."""

import numpy as np
import pytest

import modelkit.authoring as mk
import modelkit.authoring.nn.functional as MF

from helpers_authoring import random_inputs

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch

POSITIVE = dict(low=0.2, high=2.0)

CASES = [
    ("arith", lambda lib, F, a, b: (a + b) * a - b / (a * a + 1) + 2 ** a, [(2, 3), (3,)], {}),
    ("pow-max-min", lambda lib, F, a, b: lib.maximum(a, b) ** 2 + lib.minimum(a, b).abs(),
     [(4, 1), (1, 3)], {}),
    ("unary", lambda lib, F, a: a.exp() + a.log() + a.sqrt() + a.rsqrt() + a.log1p() + a.sin()
     + a.cos() + a.tanh() + a.sigmoid() + a.reciprocal(), [(3, 4)], POSITIVE),
    ("activations", lambda lib, F, a: F.relu(a) + F.leaky_relu(a, 0.2) + F.gelu(a)
     + F.gelu(a, approximate="tanh") + F.silu(a) + F.softplus(a) + lib.erf(a), [(5, 3)], {}),
    ("clamp-where", lambda lib, F, a, b: lib.where(a > 0, a.clamp(-1, 0.5), b), [(3, 3), (3,)],
     {}),
    ("reductions", lambda lib, F, a: a.sum(1).mean() + a.amax(0).sum() + a.amin(-1).sum()
     + a.prod(1).sum() + a.var(0).sum() + a.std(1).sum() + a.logsumexp(1).sum()
     + a.cumsum(0).sum(), [(3, 4)], {}),
    ("max-dim", lambda lib, F, a: a.max(dim=1).values * 2 + a.min(dim=0, keepdim=True)[0].sum(),
     [(3, 4)], {}),
    ("shape", lambda lib, F, a, b: lib.cat([a.permute(1, 0), b.t()], 0).reshape(-1, 2)
     .unsqueeze(0).expand(2, -1, -1).flatten().repeat(2) * 1.0, [(2, 3), (2, 3)], {}),
    ("split-stack", lambda lib, F, a: lib.stack(list(a.split([1, 2], dim=1))[::-1][0:1]
                                               + [a[:, :2]]).sum(0), [(4, 3)], {}),
    ("indexing", lambda lib, F, a: a[1:, None, ::2].sum() + a[a > 0].sum()
     + a[:, lib.tensor([2, 0, 2])].sum(0).sum() + a.index_select(0, lib.tensor([1, 1])).sum()
     + a.gather(1, lib.tensor([[0, 1], [2, 2], [1, 0]])).sum(), [(3, 3)], {}),
    ("masked_fill", lambda lib, F, a: a.masked_fill(a < 0, 0.1).sum(1), [(3, 4)], {}),
    ("matmul", lambda lib, F, a, b, v: (a @ b).sum(0) @ v, [(2, 3, 4), (4, 5), (5,)], {}),
    ("linear", lambda lib, F, x, w, b: F.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)], {}),
    ("softmax", lambda lib, F, a: F.softmax(a, dim=1) * F.log_softmax(a, dim=0), [(3, 4)], {}),
    ("conv2d", lambda lib, F, x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
     [(2, 4, 7, 6), (6, 2, 3, 3), (6,)], {}),
    ("conv2d-same", lambda lib, F, x, w: F.conv2d(x, w, padding="same", dilation=2),
     [(1, 2, 6, 6), (3, 2, 3, 2)], {}),
    ("conv1d", lambda lib, F, x, w: F.conv1d(x, w, stride=2), [(2, 3, 9), (4, 3, 3)], {}),
    ("conv_transpose2d", lambda lib, F, x, w, b: F.conv_transpose2d(x, w, b, stride=2,
                                                                    padding=1, output_padding=1),
     [(2, 3, 4, 4), (3, 2, 3, 3), (2,)], {}),
    ("pools", lambda lib, F, x: F.max_pool2d(x, 3, 2, 1).sum() + F.avg_pool2d(x, 2).sum()
     + F.avg_pool2d(x, 3, 2, 1, count_include_pad=False).sum()
     + F.adaptive_avg_pool2d(x, (3, 2)).sum() + F.adaptive_avg_pool2d(x, 1).sum(),
     [(2, 3, 7, 6)], {}),
    ("layer-group-norm", lambda lib, F, x, w, b: F.layer_norm(x, (4, 5)) * 2
     + F.group_norm(x, 2, w, b), [(2, 4, 5), (4,), (4,)], {}),
    ("batch_norm", lambda lib, F, x, w, b: F.batch_norm(x, None, None, w, b, training=True)
     * F.batch_norm(x, x.detach().mean((0, 2)), x.detach().var((0, 2)) + 1, w, b),
     [(5, 3, 4), (3,), (3,)], {}),
    ("embedding-one_hot", lambda lib, F, w: F.embedding(lib.tensor([[0, 2], [2, 1]]), w,
                                                        padding_idx=1).sum(1)
     + F.one_hot(lib.tensor([0, 2]), 3).float().sum(), [(3, 3)], {}),
    ("pad", lambda lib, F, x: F.pad(x, (1, 2), value=0.5).sum(-1)
     + F.pad(x, (2, 1, 1, 0), mode="reflect").sum(-1).sum(-1, keepdim=True)
     + F.pad(x, (1, 1), mode="replicate").mean(-1) + F.pad(x, (1, 2), mode="circular").sum(-1),
     [(2, 3, 4)], {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_gradients_match_pytorch(case):
    _, fn, shapes, options = case
    arrays = random_inputs(shapes, seed=7, dtype=np.float32, **options)
    ours = [mk.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = fn(mk, MF, *ours), fn(torch, TF, *theirs)
    assert tuple(out.shape) == tuple(ref.shape)
    assert str(out.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=2e-5, atol=2e-5)
    seed = np.random.default_rng(1).standard_normal(tuple(ref.shape)).astype(np.float32)
    out.backward(mk.tensor(seed))
    ref.backward(torch.tensor(seed))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-4,
                                   err_msg=f"gradient of input {i}")


def test_batch_norm_running_stats_match_pytorch():
    (x,) = random_inputs([(6, 3, 5)], dtype=np.float32)
    ours = (mk.zeros(3), mk.ones(3))
    theirs = (torch.zeros(3), torch.ones(3))
    for _ in range(3):
        MF.batch_norm(mk.tensor(x), *ours, training=True, momentum=0.2)
        TF.batch_norm(torch.tensor(x), *theirs, training=True, momentum=0.2)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
