"""Losses (modules and functional forms) against numpy written in the test, gradcheck, and
PyTorch when installed."""

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring import nn
from modelkit.authoring.nn import functional_losses as L


def _log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((6, 4))
TARGET = np.array([0, 3, 1, -100, 2, 3])
WEIGHT = np.array([0.5, 1.0, 2.0, 1.5])


def test_cross_entropy_with_weight_and_ignore_index_matches_numpy():
    logp = _log_softmax(LOGITS, 1)
    keep = TARGET != -100
    picked = -logp[np.arange(6)[keep], TARGET[keep]] * WEIGHT[TARGET[keep]]
    expected = picked.sum() / WEIGHT[TARGET[keep]].sum()
    got = L.cross_entropy(mk.tensor(LOGITS), mk.tensor(TARGET), weight=mk.tensor(WEIGHT))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_cross_entropy_label_smoothing_matches_numpy():
    eps, classes = 0.1, 4
    logp = _log_softmax(LOGITS[:3], 1)
    smoothed = np.full((3, classes), eps / classes)
    smoothed[np.arange(3), TARGET[:3]] += 1 - eps
    expected = -(smoothed * logp).sum(1).mean()
    got = nn.CrossEntropyLoss(label_smoothing=eps)(mk.tensor(LOGITS[:3]), mk.tensor(TARGET[:3]))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_cross_entropy_on_spatial_inputs_and_reductions():
    logits = RNG.standard_normal((2, 3, 4, 5))
    target = RNG.integers(0, 3, (2, 4, 5))
    logp = _log_softmax(logits, 1)
    per_item = -np.take_along_axis(logp, target[:, None], 1)[:, 0]
    got = L.cross_entropy(mk.tensor(logits), mk.tensor(target), reduction="none")
    np.testing.assert_allclose(got.numpy(), per_item, rtol=1e-9)
    assert L.cross_entropy(mk.tensor(logits), mk.tensor(target), reduction="sum").item() == \
        pytest.approx(per_item.sum())


def test_cross_entropy_with_class_probabilities():
    probs = RNG.dirichlet(np.ones(4), size=6)
    expected = -(probs * _log_softmax(LOGITS, 1)).sum(1).mean()
    assert L.cross_entropy(mk.tensor(LOGITS), mk.tensor(probs)).item() == \
        pytest.approx(expected, rel=1e-9)


def test_regression_losses_match_numpy():
    a, b = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    d = a - b
    ta, tb = mk.tensor(a), mk.tensor(b)
    assert nn.MSELoss()(ta, tb).item() == pytest.approx((d ** 2).mean())
    assert nn.L1Loss(reduction="sum")(ta, tb).item() == pytest.approx(np.abs(d).sum())
    huber = np.where(np.abs(d) < 0.5, 0.5 * d ** 2 / 0.5, np.abs(d) - 0.25)
    np.testing.assert_allclose(nn.SmoothL1Loss(reduction="none", beta=0.5)(ta, tb).numpy(),
                               huber, rtol=1e-9)


def test_binary_losses_match_numpy_and_are_stable():
    x = np.array([-200.0, -3.0, 0.0, 2.0, 200.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    pos_weight = 3.0
    softplus = lambda v: np.logaddexp(0, v)  # noqa: E731
    expected = (1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x)
    got = nn.BCEWithLogitsLoss(reduction="none", pos_weight=mk.tensor(pos_weight, dtype=mk.float64))(
        mk.tensor(x), mk.tensor(y))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)
    p = np.array([0.0, 0.2, 0.9, 1.0])
    t = np.array([0.0, 1.0, 0.0, 1.0])
    bce = nn.BCELoss(reduction="none")(mk.tensor(p), mk.tensor(t)).numpy()
    with np.errstate(divide="ignore"):
        expected = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))
    np.testing.assert_allclose(bce, expected, rtol=1e-9)
    assert np.isfinite(bce).all()


def test_nll_loss_gradient_goes_only_to_the_target_log_probabilities():
    logp = mk.tensor(_log_softmax(LOGITS, 1), requires_grad=True)
    nn.NLLLoss()(logp, mk.tensor(TARGET)).backward()
    expected = np.zeros((6, 4))
    keep = TARGET != -100
    expected[np.arange(6)[keep], TARGET[keep]] = -1 / keep.sum()
    np.testing.assert_allclose(logp.grad.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: (L.cross_entropy, dict(label_smoothing=0.2, weight=mk.tensor(WEIGHT))),
    lambda: (L.binary_cross_entropy_with_logits, dict(reduction="sum")),
    lambda: (L.smooth_l1_loss, dict(beta=0.5)),
    lambda: (L.mse_loss, {}),
])
def test_gradcheck(make):
    fn, kwargs = make()
    x = mk.tensor(RNG.standard_normal((6, 4)), requires_grad=True)
    if fn is L.cross_entropy:
        target = mk.tensor(TARGET)
    elif fn is L.binary_cross_entropy_with_logits:
        target = mk.tensor(RNG.random((6, 4)))
    else:
        target = mk.tensor(RNG.standard_normal((6, 4)))
    assert mk.autograd.gradcheck(lambda t: fn(t, target, **kwargs), (x,))


@pytest.mark.parametrize("name,kwargs,kind", [
    ("CrossEntropyLoss", dict(label_smoothing=0.1, ignore_index=1), "classes"),
    ("CrossEntropyLoss", dict(weight=WEIGHT, label_smoothing=0.3, ignore_index=-100), "classes"),
    ("CrossEntropyLoss", dict(reduction="none"), "classes"),
    ("CrossEntropyLoss", dict(label_smoothing=0.2), "probs"),
    ("NLLLoss", dict(weight=WEIGHT), "classes"),
    ("MSELoss", {}, "real"),
    ("L1Loss", dict(reduction="sum"), "real"),
    ("SmoothL1Loss", dict(beta=0.3), "real"),
    ("BCEWithLogitsLoss", dict(pos_weight=np.array([1.0, 2.0, 0.5, 3.0])), "unit"),
    ("BCELoss", dict(weight=WEIGHT), "prob-input"),
])
def test_matches_pytorch(name, kwargs, kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4))
    if kind == "prob-input":
        x = 1 / (1 + np.exp(-x))
    target = {"classes": TARGET if kwargs.get("ignore_index") == -100 else TARGET.clip(0),
              "probs": rng.dirichlet(np.ones(4), size=6),
              "real": rng.standard_normal((6, 4)),
              "unit": rng.random((6, 4)),
              "prob-input": rng.random((6, 4))}[kind]
    to_ours = {k: mk.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    to_theirs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                 for k, v in kwargs.items()}
    ours_x, theirs_x = mk.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours = getattr(nn, name)(**to_ours)(ours_x, mk.tensor(target))
    theirs = getattr(torch.nn, name)(**to_theirs)(theirs_x, torch.from_numpy(target))
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-9,
                               atol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-9,
                               atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="expected target of shape"):
        L.cross_entropy(mk.zeros(3, 4), mk.tensor([0, 1]))
    with pytest.raises(ValueError, match="must match input shape"):
        L.mse_loss(mk.zeros(3), mk.zeros(4))
