"""gradcheck (float64 central differences) for every differentiable primitive, over several
shapes per op including broadcasting and size-1 dims; plus the registry coverage test."""

from __future__ import annotations

import pytest

import modelkit.authoring as mk
import modelkit.authoring.nn.functional as F
from modelkit.authoring.ops.registry import OPS, apply

from helpers_authoring import check_grad, ops_used, random_inputs


def _dropout(x):
    mk.manual_seed(3)  # the same mask on every call, so the function is deterministic
    return F.dropout(x, 0.3)


def _setitem(x, v):
    y = x * 1
    y[0, 1:] = v
    return y


def _bn_train(x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True)


def _bn_eval(x, w, b):
    return F.batch_norm(x, mk.tensor([0.1, -0.2, 0.3], dtype=mk.float64),
                        mk.tensor([0.5, 1.5, 2.0], dtype=mk.float64), w, b, training=False)


POSITIVE = dict(low=0.2, high=2.0)

# (case id, function, input shapes, input options)
CASES = [
    ("add", lambda a, b: a + b, [(2, 3), (3,)], {}),
    ("add-size1", lambda a, b: mk.add(a, b, alpha=2), [(2, 1, 3), (4, 1)], {}),
    ("sub", lambda a, b: a - b, [(2, 3), (2, 1)], {}),
    ("rsub-scalar", lambda a: 1.5 - a, [(3,)], {}),
    ("mul", lambda a, b: a * b, [(4, 1), (1, 3)], {}),
    ("div", lambda a, b: a / b, [(2, 3), (3,)], POSITIVE),
    ("rdiv-scalar", lambda a: 2.0 / a, [(2, 2)], POSITIVE),
    ("pow", lambda a, b: a ** b, [(2, 3), (1, 3)], POSITIVE),
    ("pow-scalar", lambda a: a ** 3, [(5,)], {}),
    ("maximum", mk.maximum, [(2, 3), (3,)], {}),
    ("minimum", mk.minimum, [(1, 3), (2, 1)], {}),
    ("remainder", lambda a, b: mk.remainder(a, b), [(2, 3), (3,)], POSITIVE),
    ("neg", lambda a: -a, [(2, 3)], {}),
    ("exp", mk.exp, [(2, 3)], {}),
    ("log", mk.log, [(2, 3)], POSITIVE),
    ("log1p", mk.log1p, [(4,)], POSITIVE),
    ("sqrt", mk.sqrt, [(2, 2)], POSITIVE),
    ("rsqrt", mk.rsqrt, [(3,)], POSITIVE),
    ("reciprocal", mk.reciprocal, [(3, 1)], POSITIVE),
    ("abs", mk.abs, [(2, 3)], {}),
    ("sign", mk.sign, [(4,)], {}),
    ("floor", mk.floor, [(4,)], {}),
    ("ceil", mk.ceil, [(4,)], {}),
    ("round", mk.round, [(4,)], dict(low=0.1, high=0.4)),
    ("sin", mk.sin, [(2, 3)], {}),
    ("cos", mk.cos, [(2, 3)], {}),
    ("tanh", mk.tanh, [(2, 3)], {}),
    ("sigmoid", mk.sigmoid, [(2, 3)], {}),
    ("relu", mk.relu, [(2, 3)], {}),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.2), [(2, 3)], {}),
    ("gelu", F.gelu, [(2, 3)], {}),
    ("gelu-tanh", lambda a: F.gelu(a, approximate="tanh"), [(2, 3)], {}),
    ("silu", F.silu, [(5,)], {}),
    ("softplus", lambda a: F.softplus(a, beta=2.0, threshold=3.0), [(2, 4)], {}),
    ("erf", mk.erf, [(2, 3)], {}),
    ("clamp", lambda a: mk.clamp(a, -0.7, 0.9), [(3, 4)], {}),
    ("clamp-min", lambda a: a.clamp(min=0.3), [(6,)], {}),
    # through float32: central differences need a float32-sized step
    ("cast", lambda a: a.float(), [(3,)], dict(check=dict(eps=1e-2, atol=1e-3))),
    ("where", lambda a, b: mk.where(a > 0, a, b), [(2, 3), (3,)], {}),
    ("masked_fill", lambda a: a.masked_fill(a < 0, 0.5), [(2, 3)], {}),
    ("sum", lambda a: a.sum(), [(2, 3)], {}),
    ("sum-dims", lambda a: a.sum(dim=(0, 2), keepdim=True), [(2, 3, 2)], {}),
    ("sum-size1", lambda a: a.sum(1), [(3, 1)], {}),
    ("mean", lambda a: a.mean(dim=-1), [(2, 3)], {}),
    ("mean-all", lambda a: a.mean(), [(1, 4)], {}),
    ("amax", lambda a: a.amax(dim=1), [(2, 3)], {}),
    ("max-dim", lambda a: a.max(dim=0).values, [(3, 2)], {}),
    ("amin", lambda a: a.amin(), [(2, 3)], {}),
    ("prod", lambda a: a.prod(), [(2, 3)], {}),
    ("prod-dim", lambda a: a.prod(dim=1, keepdim=True), [(2, 3)], {}),
    ("prod-zero", lambda a: (a * mk.tensor([1.0, 0.0, 1.0], dtype=mk.float64)).prod(dim=1),
     [(2, 3)], {}),
    ("var", lambda a: a.var(dim=1), [(2, 4)], {}),
    ("std", lambda a: a.std(), [(3, 2)], {}),
    ("logsumexp", lambda a: a.logsumexp(dim=1), [(2, 3)], {}),
    ("cumsum", lambda a: a.cumsum(dim=1), [(2, 3)], {}),
    # the cpu -> cpu form of the device copy; its cuda forms run in tests/gpu
    ("to_device", lambda a: apply(OPS["to_device"], a, device=mk.device("cpu")) * 2, [(2, 3)], {}),
    ("reshape", lambda a: a.reshape(3, -1) * 1, [(2, 3)], {}),
    ("view-flatten", lambda a: a.view(6).flatten(), [(2, 3)], {}),
    ("squeeze", lambda a: a.squeeze(1), [(2, 1, 3)], {}),
    ("unsqueeze", lambda a: a.unsqueeze(-1), [(2, 3)], {}),
    ("clone", mk.clone, [(2, 3)], {}),
    ("permute", lambda a: a.permute(2, 0, 1), [(2, 3, 1)], {}),
    ("transpose", lambda a: a.transpose(0, 1), [(2, 3)], {}),
    ("expand", lambda a: a.expand(2, 3, 4), [(3, 1)], {}),
    ("cat", lambda a, b: mk.cat([a, b], dim=1), [(2, 3), (2, 1)], {}),
    ("stack", lambda a, b: mk.stack([a, b], dim=1), [(2, 3), (2, 3)], {}),
    ("split", lambda a: a.split([1, 2], dim=1)[1], [(2, 3)], {}),
    ("chunk-all", lambda a: mk.cat(list(a.chunk(2, 0))[::-1]), [(5, 2)], {}),
    ("repeat", lambda a: a.repeat(2, 1, 3), [(2, 2)], {}),
    ("pad-constant", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), [(2, 3)], {}),
    ("pad-reflect", lambda a: F.pad(a, (2, 1), mode="reflect"), [(1, 2, 4)], {}),
    ("pad-replicate", lambda a: F.pad(a, (1, 1, 2, 0), mode="replicate"), [(1, 2, 3)], {}),
    ("pad-circular", lambda a: F.pad(a, (1, 2), mode="circular"), [(2, 3)], {}),
    ("index-basic", lambda a: a[1:, None, ::2], [(3, 4)], {}),
    ("index-int", lambda a: a[-1, ..., 1], [(2, 3, 2)], {}),
    ("index-repeated", lambda a: a[mk.tensor([0, 2, 0, 0])], [(3, 2)], {}),
    ("index-mixed", lambda a: a[:, mk.tensor([[1, 1], [0, 2]])], [(2, 3)], {}),
    ("index-bool", lambda a: a[a > 0], [(3, 3)], {}),
    ("index_put", _setitem, [(2, 3), (2,)], {}),
    ("index_select", lambda a: a.index_select(1, mk.tensor([2, 0, 2])), [(2, 3)], {}),
    ("gather", lambda a: a.gather(1, mk.tensor([[0, 0], [2, 1]])), [(2, 3)], {}),
    ("embedding", lambda w: F.embedding(mk.tensor([[0, 2], [2, 2]]), w, padding_idx=1),
     [(3, 2)], {}),
    ("matmul", lambda a, b: a @ b, [(2, 3), (3, 4)], {}),
    ("matmul-batched", lambda a, b: a @ b, [(2, 1, 2, 3), (3, 3, 2)], {}),
    ("matmul-vector", lambda a, b: a @ b, [(3,), (2, 3, 2)], {}),
    ("matmul-matvec", lambda a, b: mk.matmul(a, b), [(2, 3), (3,)], {}),
    ("linear", F.linear, [(2, 3), (4, 3), (4,)], {}),
    ("linear-3d-nobias", F.linear, [(2, 2, 3), (2, 3)], {}),
    ("softmax", lambda a: F.softmax(a, dim=1), [(2, 3)], {}),
    ("log_softmax", lambda a: F.log_softmax(a, dim=0), [(3, 2)], {}),
    ("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), [(2, 2, 5), (3, 2, 3),
                                                                        (3,)], {}),
    ("conv2d", lambda x, w: F.conv2d(x, w, padding="same", dilation=2), [(1, 2, 4, 4),
                                                                          (2, 2, 2, 3)], {}),
    # unit stride, out channels <= in channels: the input gradient runs as a forward Conv
    ("conv2d-unit-stride", lambda x, w, b: F.conv2d(x, w, b, padding=(2, 0)),
     [(2, 3, 4, 5), (2, 3, 3, 2), (2,)], {}),
    ("conv2d-same-even", lambda x, w: F.conv2d(x, w, padding="same"), [(1, 3, 4, 5),
                                                                        (3, 3, 2, 4)], {}),
    ("conv1d-pad-beyond-kernel", lambda x, w: F.conv1d(x, w, padding=2), [(1, 2, 3),
                                                                           (2, 2, 2)], {}),
    ("conv2d-groups", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), groups=2),
     [(1, 4, 5, 3), (2, 2, 2, 2), (2,)], {}),
    ("conv2d-depthwise", lambda x, w: F.conv2d(x, w, padding=1, groups=2),
     [(1, 2, 3, 3), (2, 1, 3, 3)], {}),
    ("conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1,
                                                            output_padding=1),
     [(1, 2, 3, 2), (2, 3, 3, 3), (3,)], {}),
    ("conv_transpose2d-groups", lambda x, w: F.conv_transpose2d(x, w, groups=2, dilation=2),
     [(1, 2, 2, 2), (2, 1, 2, 2)], {}),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), [(1, 2, 4, 4)], {}),
    ("max_pool2d-pad", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [(2, 1, 5, 4)], {}),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2, stride=1), [(1, 2, 3, 3)], {}),
    ("avg_pool2d-pad", lambda x: F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
     [(1, 1, 5, 5)], {}),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [(1, 2, 5, 4)], {}),
    ("adaptive_avg_pool2d-even", lambda x: F.adaptive_avg_pool2d(x, 1), [(2, 2, 2, 3)], {}),
    ("batch_norm-train", _bn_train, [(4, 3, 2), (3,), (3,)], {}),
    ("batch_norm-train-no-affine", lambda x: F.batch_norm(x, None, None, training=True),
     [(3, 2, 2, 2)], {}),
    ("batch_norm-eval", _bn_eval, [(2, 3, 2, 2), (3,), (3,)], {}),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, (3,), w, b), [(2, 3), (3,), (3,)], {}),
    ("layer_norm-2d", lambda x: F.layer_norm(x, (2, 3)), [(2, 2, 3)], {}),
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3), (4,), (4,)], {}),
    ("dropout", _dropout, [(3, 4)], {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(case):
    _, fn, shapes, options = case
    options = dict(options)
    check = options.pop("check", {})
    check_grad(fn, random_inputs(shapes, seed=len(case[0]), **options), **check)


def test_every_differentiable_op_has_a_gradcheck_case():
    covered = set()
    for _, fn, shapes, options in CASES:
        options = {k: v for k, v in options.items() if k != "check"}
        covered |= ops_used(fn, random_inputs(shapes, **options))
    differentiable = {name for name, op in OPS.items() if op.differentiable}
    missing = sorted(differentiable - covered)
    assert not missing, f"differentiable ops without a gradcheck case: {missing}"
