"""Autograd engine: accumulation, graph freeing, grad modes, hooks, autograd.grad, Function,
gradcheck, detect_anomaly."""

import inspect

import numpy as np
import pytest

import modelkit.authoring as mk


def _line_of(marker: str) -> int:
    """The line number of `marker` in this file (for detect_anomaly's file:line)."""
    lines = inspect.getsource(inspect.getmodule(_line_of)).splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line and "_line_of" not in line)


def test_gradients_accumulate_across_backward_calls():
    x = mk.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (3 * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])


def test_shared_subexpression_and_diamond_graph():
    x = mk.tensor([0.5, -1.0], requires_grad=True)
    a = x.exp()
    b = a * a + a.sin()   # a feeds two consumers
    b.sum().backward()
    e = np.exp([0.5, -1.0])
    np.testing.assert_allclose(x.grad.numpy(), (2 * e + np.cos(e)) * e, rtol=1e-6)


def test_backward_with_explicit_gradient_and_non_scalar_error():
    x = mk.ones(3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        y.backward()
    y.backward(mk.tensor([1.0, 0.0, 2.0]))
    assert x.grad.tolist() == [2.0, 0.0, 4.0]


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = mk.ones(2, requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 4.0]
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_no_grad_and_enable_grad_as_context_managers_and_decorators():
    x = mk.ones(2, requires_grad=True)
    with mk.no_grad():
        assert not (x * 2).requires_grad
        with mk.enable_grad():
            assert (x * 2).requires_grad
    assert mk.is_grad_enabled()

    @mk.no_grad()
    def frozen(t):
        return t * 2

    @mk.enable_grad()
    def thawed(t):
        return t * 2

    @mk.no_grad
    def bare(t):
        return t * 2

    assert not frozen(x).requires_grad and not bare(x).requires_grad
    with mk.no_grad():
        assert thawed(x).requires_grad
    with mk.inference_mode():
        assert not (x * 2).requires_grad
    with mk.set_grad_enabled(False):
        assert not (x + 1).requires_grad
    assert mk.is_grad_enabled()


def test_hooks_see_and_replace_gradients():
    x = mk.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    y = x * 3
    y.register_hook(lambda g: seen.append(g.tolist()))
    handle = x.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert seen == [[1.0, 1.0]] and x.grad.tolist() == [30.0, 30.0]
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_retain_grad_keeps_non_leaf_gradient():
    x = mk.ones(2, requires_grad=True)
    y = x * 2
    y.retain_grad()
    (y * y).sum().backward()
    assert y.grad.tolist() == [4.0, 4.0]


def test_autograd_grad_returns_without_accumulating():
    x = mk.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    out = (h * 3).sum()
    gx, gh = mk.autograd.grad(out, [x, h], retain_graph=True)
    assert gx.tolist() == [6.0, 12.0] and gh.tolist() == [3.0, 3.0] and x.grad is None
    (g,) = mk.autograd.grad(h, x, grad_outputs=mk.tensor([1.0, 0.0]))
    assert g.tolist() == [2.0, 0.0]
    unused = mk.ones(1, requires_grad=True)
    with pytest.raises(RuntimeError, match="not have been used"):
        mk.autograd.grad((x * 2).sum(), [x, unused])
    assert mk.autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)[1] is None
    with pytest.raises(NotImplementedError, match="create_graph"):
        mk.autograd.grad((x * 2).sum(), x, create_graph=True)


class _ScaledExp(mk.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        y = (x * scale).exp()
        ctx.save_for_backward(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * ctx.scale, None


def test_custom_function_forward_backward_and_gradcheck():
    x = mk.tensor([0.1, -0.3], dtype=mk.float64, requires_grad=True)
    y = _ScaledExp.apply(x, 2.0)
    assert y.grad_fn.name() == "_ScaledExpBackward"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * np.array([0.1, -0.3])))
    assert mk.autograd.gradcheck(lambda t: _ScaledExp.apply(t, 1.5), (x,))


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(mk.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x  # should be 2 * x

    x = mk.tensor([0.7, 1.3], dtype=mk.float64, requires_grad=True)
    with pytest.raises(mk.autograd.GradcheckError, match="Jacobian mismatch"):
        mk.autograd.gradcheck(WrongSquare.apply, (x,))
    assert not mk.autograd.gradcheck(WrongSquare.apply, (x,), raise_exception=False)


def test_detect_anomaly_names_op_and_user_line_in_forward():
    x = mk.tensor([1.0, -1.0], requires_grad=True)
    with mk.autograd.detect_anomaly():
        with pytest.raises(RuntimeError) as info:
            mk.sqrt(x)  # ANOMALY-FORWARD
    message = str(info.value)
    assert "'sqrt'" in message
    assert f"{__file__}:{_line_of('# ANOMALY-FORWARD')}" in message


def test_detect_anomaly_names_op_and_user_line_in_backward():
    x = mk.tensor([0.0, 1.0], requires_grad=True)
    with mk.autograd.detect_anomaly():
        y = x.abs().sqrt()  # ANOMALY-BACKWARD  (sqrt'(0) = inf: the first non-finite gradient)
        with pytest.raises(RuntimeError) as info:
            y.sum().backward()
    message = str(info.value)
    assert "SqrtBackward0" in message and "'sqrt'" in message
    assert f"{__file__}:{_line_of('# ANOMALY-BACKWARD')}" in message


def test_detect_anomaly_allows_deliberate_infinities_and_is_off_by_default():
    scores = mk.tensor([[1.0, 2.0]], requires_grad=True)
    mask = mk.tensor([[False, True]])
    with mk.autograd.detect_anomaly():
        attn = mk.nn.functional.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        attn.sum().backward()
    assert attn.tolist() == [[1.0, 0.0]]
    assert mk.log(mk.tensor([-1.0])).isnan().item()  # no error outside detect_anomaly


def test_no_graph_recorded_for_integer_results_and_no_grad_inputs():
    x = mk.ones(2, requires_grad=True)
    assert not x.argmax().requires_grad and not (x > 0).requires_grad
    assert not (mk.ones(2) * 2).requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        (mk.ones(2) * 2).sum().backward()


def test_broadcast_gradients_reduce_to_input_shape_and_keep_dtype():
    a = mk.ones(3, 1, requires_grad=True)
    b = mk.ones(1, 4, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and a.grad.tolist() == [[4.0]] * 3
    assert b.grad.shape == (1, 4) and b.grad.dtype == mk.float32
