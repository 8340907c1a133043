"""Loss kernels: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (ONNX opset 12/13).

Both pick, for every sample (and spatial position), minus the log-probability of its target
class, weight it by `weight[target]` (0 where target == ignore_index) and reduce: "none" keeps
the target's shape, "sum" adds, "mean" divides the sum by the summed weights.

Example:
    >>> import numpy as np
    >>> log_probs = np.log(np.float32([[0.5, 0.5], [0.25, 0.75]]))
    >>> negative_log_likelihood_loss(np, log_probs, np.array([0, 1]), reduction="none")[0]
    array([0.6931472, 0.2876821], dtype=float32)
"""

from __future__ import annotations

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel

_REDUCTIONS = ("none", "sum", "mean")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _picked_loss(xp, op, log_probs, target, weight, ignore_index, reduction):
    """Reduce -log_probs[n, target[n, ...], ...] weighted as the ONNX loss ops specify."""
    reduction = _text(reduction)
    if reduction not in _REDUCTIONS:
        raise KernelError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if log_probs.ndim < 2 or target.shape != (log_probs.shape[0], *log_probs.shape[2:]):
        raise KernelError(f"{op}: target of shape {tuple(target.shape)} does not match input "
                          f"of shape {tuple(log_probs.shape)}; expected (N, d1, ..., dk)")
    classes = log_probs.shape[1]
    kept = None if ignore_index is None else target != ignore_index
    outside = (target < 0) | (target >= classes)
    if bool((outside if kept is None else outside & kept).any()):
        raise KernelError(f"{op}: target holds class indices outside [0, {classes}) that are not "
                          f"ignore_index ({ignore_index})")
    # ignored targets may lie outside [0, C): clip to gather something, then zero their weight
    safe_target = xp.clip(target, 0, classes - 1).astype(xp.int64)
    picked = xp.take_along_axis(log_probs, safe_target[:, None], axis=1)[:, 0]
    if weight is not None:
        sample_weight = weight.astype(log_probs.dtype, copy=False)[safe_target]
        if kept is not None:
            sample_weight = xp.where(kept, sample_weight, log_probs.dtype.type(0))
    elif kept is not None:
        sample_weight = kept.astype(log_probs.dtype)
    else:
        sample_weight = None
    loss = -picked if sample_weight is None else -picked * sample_weight
    if reduction == "none":
        return loss
    total = loss.sum(dtype=log_probs.dtype)
    if reduction == "sum":
        return xp.asarray(total)
    count = (log_probs.dtype.type(loss.size) if sample_weight is None
             else sample_weight.sum(dtype=log_probs.dtype))
    return xp.asarray(total / count).astype(log_probs.dtype, copy=False)


@kernel("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(xp, input, target, weight=None, *, ignore_index=None,
                                 reduction="mean"):
    """NLL of log-probabilities `input` [N, C, d1..dk] at class indices `target` [N, d1..dk].

    Example: see the module docstring.
    """
    return (_picked_loss(xp, "NegativeLogLikelihoodLoss", input, target, weight, ignore_index,
                         reduction),)


@kernel("SoftmaxCrossEntropyLoss", since=12, wants_n_outputs=True)
def softmax_cross_entropy_loss(xp, scores, labels, weights=None, *, ignore_index=None,
                               reduction="mean", n_outputs=1):
    """NLL of log_softmax(scores, axis=1); the second output (if asked for) is that log_softmax.

    Example:
        >>> import numpy as np
        >>> loss, log_prob = softmax_cross_entropy_loss(np, np.float32([[0, 0]]), np.array([1]),
        ...                                             n_outputs=2)
        >>> loss, log_prob
        (array(0.6931472, dtype=float32), array([[-0.6931472, -0.6931472]], dtype=float32))
    """
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_prob = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = _picked_loss(xp, "SoftmaxCrossEntropyLoss", log_prob, labels, weights, ignore_index,
                        reduction)
    return (loss, log_prob)[:max(n_outputs, 1)]
