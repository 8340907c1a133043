"""Loss functions, as `torch.nn.functional`: compositions of registry ops through the Tensor
API, so autograd differentiates them and the tracer records them like any other code.

`reduction` is 'mean' (default), 'sum' or 'none' everywhere.

Example:
    >>> import modelkit.authoring as mk
    >>> logits = mk.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(cross_entropy(logits, mk.tensor([0, 1])).item(), 4)
    0.1269
"""

from __future__ import annotations

from modelkit.authoring.nn import functional as F

__all__ = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss, reduction: str):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction!r} is not a valid value for reduction; expected one of "
                     f"{_REDUCTIONS}")


def _check_same_shape(name, input, target):
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{name}: target shape {tuple(target.shape)} must match input shape "
                         f"{tuple(input.shape)}")


def _class_targets(name, input, target):
    """Check (N, C, *) input against (N, *) class-index target; returns C."""
    if input.ndim < 1 or target.dtype.is_floating_point:
        raise TypeError(f"{name}: expected integer class indices as target, got {target.dtype}")
    batch_shape = (tuple(input.shape[:1]) + tuple(input.shape[2:])) if input.ndim > 1 else ()
    if tuple(target.shape) != batch_shape:
        raise ValueError(f"{name}: expected target of shape {batch_shape} for input of shape "
                         f"{tuple(input.shape)}, got {tuple(target.shape)}")
    return input.shape[1] if input.ndim > 1 else input.shape[0]


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of `target` classes under log-probabilities `input` (N, C, *).
    With 'mean', the sum is divided by the total weight of the non-ignored targets.

    Example:
        >>> import modelkit.authoring as mk
        >>> nll_loss(mk.tensor([[-1.0, -2.0]]), mk.tensor([1])).item()
        2.0
    """
    import modelkit.authoring as mk
    _class_targets("nll_loss", input, target)
    class_dim = 1 if input.ndim > 1 else 0
    keep = target != ignore_index
    safe_target = mk.where(keep, target, mk.zeros_like(target))
    picked = -input.gather(class_dim, safe_target.unsqueeze(class_dim)).squeeze(class_dim)
    weights = keep.to(input.dtype)
    if weight is not None:
        weights = weights * weight[safe_target]
    loss = picked * weights
    if reduction == "mean":
        return loss.sum() / weights.sum()
    return _reduce(loss, reduction)


def cross_entropy(input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0):
    """log_softmax over the class dim (1, or 0 for an unbatched (C,) input) then nll_loss.
    `target` holds class indices (N, *) or class probabilities shaped like `input`.
    `label_smoothing` mixes the one-hot target with the uniform distribution.

    Example:
        >>> import modelkit.authoring as mk
        >>> round(cross_entropy(mk.zeros(1, 4), mk.tensor([3])).item(), 4)  # log(4)
        1.3863
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    class_dim = 1 if input.ndim > 1 else 0
    log_probs = F.log_softmax(input, dim=class_dim)
    classes = input.shape[class_dim]
    if target.dtype.is_floating_point:
        return _soft_cross_entropy(log_probs, target, weight, reduction, label_smoothing,
                                   class_dim)
    loss = nll_loss(log_probs, target, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    return (1 - label_smoothing) * loss + label_smoothing / classes * _smoothing_term(
        log_probs, target, weight, ignore_index, reduction, class_dim)


def _weight_view(weight, ndim, class_dim):
    shape = [1] * ndim
    shape[class_dim] = -1
    return weight.reshape(*shape)


def _smoothing_term(log_probs, target, weight, ignore_index, reduction, class_dim):
    """-(sum over classes of w_c * log p_c), with PyTorch's normalisation for 'mean'."""
    import modelkit.authoring as mk
    keep = target != ignore_index
    if weight is not None:
        log_probs = log_probs * _weight_view(weight, log_probs.ndim, class_dim)
    smooth = -log_probs.sum(dim=class_dim) * keep.to(log_probs.dtype)
    if reduction != "mean":
        return _reduce(smooth, reduction)
    if weight is None:
        return smooth.sum() / keep.to(log_probs.dtype).sum()
    safe_target = mk.where(keep, target, mk.zeros_like(target))
    return smooth.sum() / (weight[safe_target] * keep.to(log_probs.dtype)).sum()


def _soft_cross_entropy(log_probs, target, weight, reduction, label_smoothing, class_dim):
    _check_same_shape("cross_entropy", log_probs, target)
    classes = log_probs.shape[class_dim]
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    if weight is not None:
        log_probs = log_probs * _weight_view(weight, log_probs.ndim, class_dim)
    loss = -(log_probs * target).sum(dim=class_dim)
    if reduction == "mean":
        return loss.sum() / (loss.numel() if loss.ndim else 1)
    return _reduce(loss, reduction)


def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error.

    Example:
        >>> import modelkit.authoring as mk
        >>> mse_loss(mk.tensor([1.0, 3.0]), mk.tensor([0.0, 0.0])).item()
        5.0
    """
    _check_same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """Mean absolute error."""
    _check_same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """Huber-like loss: 0.5 * d^2 / beta where |d| < beta, else |d| - 0.5 * beta.

    Example:
        >>> import modelkit.authoring as mk
        >>> smooth_l1_loss(mk.tensor([0.5, 3.0]), mk.zeros(2), reduction="none")
        tensor([0.1250, 2.5000])
    """
    import modelkit.authoring as mk
    _check_same_shape("smooth_l1_loss", input, target)
    diff = (input - target).abs()
    if beta == 0.0:
        return _reduce(diff, reduction)
    loss = mk.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return _reduce(loss, reduction)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """BCE of probabilities `input` against `target`; each log is clamped at -100 as in
    PyTorch, so a probability of exactly 0 or 1 gives a finite loss."""
    _check_same_shape("binary_cross_entropy", input, target)
    log_p = input.log().clamp(min=-100)
    log_not_p = (1 - input).log().clamp(min=-100)
    loss = -(target * log_p + (1 - target) * log_not_p)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",
                                     pos_weight=None):
    """Sigmoid + BCE in one stable expression: (1 - y) x + (1 + (pw - 1) y) softplus(-x).

    Example:
        >>> import modelkit.authoring as mk
        >>> round(binary_cross_entropy_with_logits(mk.zeros(1), mk.ones(1)).item(), 4)
        0.6931
    """
    _check_same_shape("binary_cross_entropy_with_logits", input, target)
    softplus_neg = F.softplus(-input)
    if pos_weight is not None:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * softplus_neg
    else:
        loss = (1 - target) * input + softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
