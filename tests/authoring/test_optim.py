"""Optimizers and learning-rate schedulers, against update rules written out in numpy and,
when installed, against PyTorch's optimizers on the same gradients."""

import math

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring import nn, optim
from modelkit.authoring.optim import lr_scheduler


def _grads(steps, shape=(3, 2), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]


def _run(make_optimizer, start, grads):
    p = nn.Parameter(mk.tensor(start.copy()))
    opt = make_optimizer([p])
    for g in grads:
        p.grad = mk.tensor(g)
        opt.step()
    return p.detach().numpy()


START = np.random.default_rng(1).standard_normal((3, 2)).astype(np.float32)


def test_sgd_momentum_nesterov_weight_decay_matches_numpy():
    grads = _grads(4)
    lr, mom, wd = 0.1, 0.9, 0.01
    p, buf = START.astype(np.float64), None
    for g in grads:
        d = g + wd * p
        buf = d.copy() if buf is None else mom * buf + d
        p = p - lr * (d + mom * buf)
    got = _run(lambda ps: optim.SGD(ps, lr=lr, momentum=mom, weight_decay=wd, nesterov=True),
               START, grads)
    np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-6)


def test_adam_matches_numpy():
    grads = _grads(5)
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    p, m, v = START.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(_run(lambda ps: optim.Adam(ps, lr=lr), START, grads), p,
                               rtol=1e-5, atol=1e-6)


def test_adamw_decays_weights_directly():
    zero = [np.zeros((3, 2), np.float32)]
    got = _run(lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.5), START, zero)
    np.testing.assert_allclose(got, START * (1 - 0.1 * 0.5), rtol=1e-6)


def test_optimizers_keep_float32():
    p = nn.Parameter(mk.ones(2))
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9), optim.Adam([p]), optim.RMSprop([p])):
        p.grad = mk.ones(2)
        opt.step()
        assert p.dtype == mk.float32


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-2)),
])
def test_matches_pytorch(name, kwargs):
    torch = pytest.importorskip("torch")
    grads = _grads(6)
    ours = _run(lambda ps: getattr(optim, name)(ps, **kwargs), START, grads)
    p = torch.nn.Parameter(torch.from_numpy(START.copy()))
    opt = getattr(torch.optim, name)([p], **kwargs)
    for g in grads:
        p.grad = torch.from_numpy(g)
        opt.step()
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_parameter_groups_have_their_own_hyper_parameters():
    a, b = nn.Parameter(mk.ones(1)), nn.Parameter(mk.ones(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad, b.grad = mk.ones(1), mk.ones(1)
    opt.step()
    assert a.item() == pytest.approx(0.9) and b.item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})


def test_zero_grad_sets_none_or_zeros():
    p = nn.Parameter(mk.ones(2))
    opt = optim.SGD([p], lr=0.1)
    p.grad = mk.ones(2)
    opt.zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None


def test_state_dict_round_trip_resumes_identically():
    grads = _grads(6)
    p = nn.Parameter(mk.tensor(START.copy()))
    opt = optim.Adam([p], lr=1e-2)
    for g in grads[:3]:
        p.grad = mk.tensor(g)
        opt.step()
    saved_param, saved_state = p.detach().numpy().copy(), opt.state_dict()
    q = nn.Parameter(mk.tensor(saved_param.copy()))
    resumed = optim.Adam([q], lr=0.5)
    resumed.load_state_dict(saved_state)
    assert resumed.param_groups[0]["lr"] == 1e-2
    for g in grads[3:]:
        p.grad, q.grad = mk.tensor(g), mk.tensor(g)
        opt.step()
        resumed.step()
    np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_clip_grad_norm():
    a, b = nn.Parameter(mk.zeros(2)), nn.Parameter(mk.zeros(1))
    a.grad, b.grad = mk.tensor([3.0, 0.0]), mk.tensor([4.0])
    total = nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.numpy(), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.8], rtol=1e-5)
    small = nn.utils.clip_grad_norm_([a, b], max_norm=10.0)
    assert small.item() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.8], rtol=1e-5)


# --- schedulers -------------------------------------------------------------------------

def _lrs(make, steps, lr=0.1, **optimizer_kwargs):
    opt = optim.SGD([nn.Parameter(mk.zeros(1))], lr=lr, **optimizer_kwargs)
    sched = make(opt)
    rates = []
    for _ in range(steps):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return rates


def test_step_multistep_exponential_cosine_lambda_closed_forms():
    assert _lrs(lambda o: lr_scheduler.StepLR(o, 2, 0.5), 5) == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025])
    assert _lrs(lambda o: lr_scheduler.MultiStepLR(o, [1, 3], 0.1), 4) == pytest.approx(
        [0.1, 0.01, 0.01, 0.001])
    assert _lrs(lambda o: lr_scheduler.ExponentialLR(o, 0.5), 3) == pytest.approx(
        [0.1, 0.05, 0.025])
    assert _lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, 4), 5) == pytest.approx(
        [0.1 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)])
    assert _lrs(lambda o: lr_scheduler.LambdaLR(o, lambda e: 1 / (e + 1)), 3) == pytest.approx(
        [0.1, 0.05, 0.1 / 3])


def test_one_cycle_rises_then_anneals_and_cycles_momentum():
    opt = optim.SGD([nn.Parameter(mk.zeros(1))], lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    rates, momenta = [], []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert rates[0] == pytest.approx(1.0 / 25) and max(rates) == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(1.0 / 25 / 1e4)
    assert momenta[0] == pytest.approx(0.95) and min(momenta) == pytest.approx(0.85)


@pytest.mark.parametrize("name,kwargs", [
    ("StepLR", dict(step_size=3, gamma=0.3)),
    ("MultiStepLR", dict(milestones=[2, 5], gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=12)),
    ("OneCycleLR", dict(max_lr=0.5, epochs=3, steps_per_epoch=4, three_phase=True,
                        anneal_strategy="linear")),
])
def test_schedulers_match_pytorch(name, kwargs):
    torch = pytest.importorskip("torch")
    ours = _lrs(lambda o: getattr(lr_scheduler, name)(o, **kwargs), 12, momentum=0.9)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = getattr(torch.optim.lr_scheduler, name)(opt, **kwargs)
    theirs = []
    for _ in range(12):
        theirs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9)
