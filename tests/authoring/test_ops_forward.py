"""Forward values of the tensor ops against numpy written independently here (float32 in,
float32 out), and the error messages users see."""

import math

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring.errors import DTypeError, ShapeError

from helpers_authoring import check_forward, random_inputs

_erf = np.vectorize(math.erf)

ELEMENTWISE = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, [(2, 3), (3,)]),
    ("sub-size1", lambda a, b: a - b, lambda a, b: a - b, [(4, 1), (1, 5)]),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [(2, 1, 3), (4, 3)]),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(3,), (2, 3)]),
    ("floordiv", lambda a, b: a // b, lambda a, b: np.floor_divide(a, b), [(5,), (5,)]),
    ("mod", lambda a, b: a % b, lambda a, b: np.mod(a, b), [(5,), (5,)]),
    ("pow", lambda a: a.abs() ** 1.5, lambda a: np.abs(a) ** np.float32(1.5), [(6,)]),
    ("maximum", mk.maximum, np.maximum, [(2, 3), (3,)]),
    ("minimum", mk.minimum, np.minimum, [(2, 3), (1, 3)]),
    ("exp", mk.exp, np.exp, [(7,)]),
    ("log", lambda a: a.abs().log(), lambda a: np.log(np.abs(a)), [(7,)]),
    ("log1p", lambda a: a.abs().log1p(), lambda a: np.log1p(np.abs(a)), [(7,)]),
    ("sqrt", lambda a: a.abs().sqrt(), lambda a: np.sqrt(np.abs(a)), [(7,)]),
    ("rsqrt", lambda a: a.abs().rsqrt(), lambda a: 1 / np.sqrt(np.abs(a)), [(7,)]),
    ("abs-neg-sign", lambda a: -a.abs() * a.sign(), lambda a: -np.abs(a) * np.sign(a), [(7,)]),
    ("trig", lambda a: a.sin() + a.cos(), lambda a: np.sin(a) + np.cos(a), [(7,)]),
    ("tanh", mk.tanh, np.tanh, [(7,)]),
    ("sigmoid", mk.sigmoid, lambda a: 1 / (1 + np.exp(-a)), [(3, 3)]),
    ("relu", mk.relu, lambda a: np.maximum(a, 0), [(3, 3)]),
    ("leaky_relu", lambda a: mk.leaky_relu(a, 0.1), lambda a: np.where(a > 0, a, 0.1 * a),
     [(3, 3)]),
    ("gelu", mk.gelu, lambda a: 0.5 * a * (1 + _erf(a / math.sqrt(2))), [(9,)]),
    ("gelu-tanh", lambda a: mk.gelu(a, approximate="tanh"),
     lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))), [(9,)]),
    ("silu", mk.silu, lambda a: a / (1 + np.exp(-a)), [(9,)]),
    ("softplus", mk.softplus, lambda a: np.log1p(np.exp(a)), [(9,)]),
    ("erf", mk.erf, _erf, [(9,)]),
    ("clamp", lambda a: a.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), [(9,)]),
    ("where", lambda a, b: mk.where(a > b, a, b), lambda a, b: np.where(a > b, a, b),
     [(2, 3), (3,)]),
    ("masked_fill", lambda a: a.masked_fill(a > 0, -1.0), lambda a: np.where(a > 0, -1, a),
     [(4,)]),
]


@pytest.mark.parametrize("case", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_forward(case):
    _, mk_fn, np_fn, shapes = case
    arrays = random_inputs(shapes)
    check_forward(mk_fn, lambda *a: np.asarray(np_fn(*a), dtype=np.float32), arrays,
                  atol=2e-6, rtol=2e-6)


REDUCTIONS = [
    ("sum", lambda a: a.sum(), lambda a: a.sum()),
    ("sum-dims", lambda a: a.sum(dim=(0, 2)), lambda a: a.sum(axis=(0, 2))),
    ("mean-keepdim", lambda a: a.mean(-1, keepdim=True), lambda a: a.mean(-1, keepdims=True)),
    ("amax", lambda a: a.amax(1), lambda a: a.max(1)),
    ("max-values", lambda a: a.max(dim=2).values, lambda a: a.max(2)),
    ("amin", lambda a: a.amin(), lambda a: a.min()),
    ("prod", lambda a: a.prod(1), lambda a: a.prod(1)),
    ("var", lambda a: a.var(1), lambda a: a.var(1, ddof=1)),
    ("var-biased", lambda a: a.var(unbiased=False), lambda a: a.var()),
    ("std", lambda a: a.std(dim=0), lambda a: a.std(0, ddof=1)),
    ("logsumexp", lambda a: a.logsumexp(dim=2),
     lambda a: np.log(np.exp(a.astype(np.float64)).sum(2))),
    ("cumsum", lambda a: a.cumsum(1), lambda a: a.cumsum(1)),
]


@pytest.mark.parametrize("case", REDUCTIONS, ids=[c[0] for c in REDUCTIONS])
def test_reduction_forward(case):
    _, mk_fn, np_fn = case
    check_forward(mk_fn, lambda a: np.asarray(np_fn(a), dtype=np.float32),
                  random_inputs([(3, 4, 2)]), atol=1e-5)


def test_arg_reductions_and_integer_sums():
    a = mk.tensor([[1.0, 5.0, 5.0], [7.0, 0.0, 7.0]])
    assert a.argmax().item() == 3 and a.argmax(dim=1).tolist() == [1, 0]
    assert a.argmin(dim=0, keepdim=True).tolist() == [[0, 1, 0]]
    assert a.max(dim=1).indices.tolist() == [1, 0]
    assert mk.tensor([True, True, False]).sum().dtype == mk.int64
    assert mk.tensor([1, 2], dtype=mk.int32).sum().item() == 3
    with pytest.raises(RuntimeError, match="floating point"):
        mk.tensor([1, 2]).mean()


def test_shape_ops_forward():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = mk.tensor(a)
    np.testing.assert_array_equal(t.permute(2, 0, 1).numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.transpose(0, 2).numpy(), a.swapaxes(0, 2))
    np.testing.assert_array_equal(t.view(-1, 4).numpy(), a.reshape(-1, 4))
    np.testing.assert_array_equal(t.flatten(1).numpy(), a.reshape(2, 12))
    np.testing.assert_array_equal(t[:, None].squeeze(1).numpy(), a)
    np.testing.assert_array_equal(t[:1].expand(3, 3, 4).numpy(), np.broadcast_to(a[:1],
                                                                                 (3, 3, 4)))
    np.testing.assert_array_equal(t.repeat(1, 2, 1).numpy(), np.tile(a, (1, 2, 1)))
    np.testing.assert_array_equal(mk.cat([t, t], 2).numpy(), np.concatenate([a, a], 2))
    np.testing.assert_array_equal(mk.stack([t, t], -1).numpy(), np.stack([a, a], -1))
    assert [p.shape[1] for p in t.split(2, dim=1)] == [2, 1]
    assert [p.shape[2] for p in t.chunk(3, dim=2)] == [2, 2]
    assert [p.shape for p in t.unbind(0)] == [(3, 4), (3, 4)]
    np.testing.assert_array_equal(t.T.numpy(), a.T)


def test_indexing_forward_matches_numpy():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = mk.tensor(a)
    idx = np.array([2, 0, 2])
    for key_t, key_np in [((1, slice(None), 2), (1, slice(None), 2)),
                          ((Ellipsis, None, slice(1, None, 2)),
                           (Ellipsis, None, slice(1, None, 2))),
                          ((slice(None), mk.tensor(idx)), (slice(None), idx)),
                          ((t > 10,), (a > 10,)),
                          ((0, mk.tensor([[0, 1], [2, 2]]), mk.tensor([3, 0])),
                           (0, np.array([[0, 1], [2, 2]]), np.array([3, 0])))]:
        np.testing.assert_array_equal(t[key_t].numpy(), a[key_np])
    np.testing.assert_array_equal(t.index_select(2, mk.tensor(idx)).numpy(), a[:, :, idx])
    g = np.array([[[0, 3]] * 3] * 2)
    np.testing.assert_array_equal(t.gather(2, mk.tensor(g)).numpy(),
                                  np.take_along_axis(a, g, 2))
    assert mk.nn.functional.one_hot(mk.tensor([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]


def test_indexing_backward_accumulates_repeated_indices():
    x = mk.zeros(3, requires_grad=True)
    x[mk.tensor([0, 2, 0, 0])].sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]
    w = mk.zeros(4, 2, requires_grad=True)
    mk.nn.functional.embedding(mk.tensor([[1, 1], [3, 1]]), w).sum().backward()
    assert w.grad[:, 0].tolist() == [0.0, 3.0, 0.0, 1.0]
    y = mk.zeros(2, 3, requires_grad=True)
    y.gather(1, mk.tensor([[1, 1, 1], [0, 2, 0]])).sum().backward()
    assert y.grad.tolist() == [[0.0, 3.0, 0.0], [2.0, 0.0, 1.0]]


def test_matmul_forward_batched_and_vectors():
    a, b = random_inputs([(2, 1, 3, 4), (5, 4, 2)], dtype=np.float32)
    np.testing.assert_allclose((mk.tensor(a) @ mk.tensor(b)).numpy(), a @ b, rtol=1e-5)
    v = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose((mk.tensor(v) @ mk.tensor(b)).numpy(), v @ b, rtol=1e-5)
    assert (mk.tensor(a) @ mk.tensor(b)).dtype == mk.float32


def test_float32_stays_float32_through_ops_and_backward():
    x = mk.randn(3, 4, requires_grad=True)
    y = (x.exp() * 0.5 + x.sigmoid() - x.tanh() / 3).softmax(dim=1).logsumexp(dim=0)
    assert y.dtype == mk.float32
    y.sum().backward()
    assert x.grad.dtype == mk.float32


def test_shape_errors_name_the_op_and_both_shapes():
    with pytest.raises(ShapeError, match=r"mat1 and mat2 shapes cannot be multiplied "
                                         r"\(2x3 and 4x5\)"):
        mk.ones(2, 3) @ mk.ones(4, 5)
    with pytest.raises(RuntimeError, match=r"add: the size of tensor a \(3\) must match the "
                                           r"size of tensor b \(4\) at non-singleton dimension "
                                           r"1 \(shapes \(2, 3\) and \(4,\)\)"):
        mk.ones(2, 3) + mk.ones(4)
    with pytest.raises(ShapeError, match=r"linear: mat1 and mat2 shapes cannot be multiplied "
                                         r"\(4x3 and 5x2\)"):
        mk.nn.functional.linear(mk.ones(4, 3), mk.ones(2, 5))
    with pytest.raises(ShapeError, match=r"cat: .*tensor 0 has shape \(2, 3\) and tensor 1 has "
                                         r"shape \(2, 4\)"):
        mk.cat([mk.ones(2, 3), mk.ones(2, 4)])
    with pytest.raises(ShapeError, match=r"shape '\[4, 2\]' is invalid for input of size 6"):
        mk.ones(2, 3).view(4, 2)
    with pytest.raises(ShapeError, match=r"expanded size of the tensor \(4\) must match the "
                                         r"existing size \(3\)"):
        mk.ones(3).expand(2, 4)


def test_dtype_and_argument_errors():
    with pytest.raises(DTypeError, match=r"matmul: .*modelkit.float32 \(shape \(2, 2\)\) and "
                                         r"modelkit.float64"):
        mk.ones(2, 2) @ mk.ones(2, 2, dtype=mk.float64)
    with pytest.raises(IndexError, match="must be long, int, byte or bool"):
        mk.ones(3)[mk.tensor([0.0])]
    with pytest.raises(DTypeError, match="index_select.*int64"):
        mk.ones(3).index_select(0, mk.tensor([0.0]))
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of "
                                         r"\[-2, 1\], but got -3\)"):
        mk.ones(2, 2).sum(dim=-3)
    with pytest.raises(TypeError, match="masked_fill only supports boolean masks"):
        mk.ones(2).masked_fill(mk.tensor([1, 0]), 0.0)
    with pytest.raises(ValueError, match="approximate"):
        mk.gelu(mk.ones(1), approximate="fast")
