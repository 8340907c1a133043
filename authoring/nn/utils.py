"""`nn.utils`: gradient clipping.

Example:
    >>> import modelkit.authoring as mk
    >>> w = mk.nn.Parameter(mk.zeros(2)); w.grad = mk.tensor([3.0, 4.0])
    >>> clip_grad_norm_([w], max_norm=1.0).item(), w.grad
    (5.0, tensor([0.6000, 0.8000]))
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.nn.parameter import Tensor, tensor_from_array

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together, in place, so that their joint `norm_type`-norm is at most
    `max_norm`. Returns the norm before clipping. Like optimizer steps, this is not recorded
    by autograd."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad.array for p in params if p.grad is not None]
    if not grads:
        return tensor_from_array(np.zeros((), np.float32))
    xp = array_module(grads[0])
    if norm_type == math.inf:
        norms = [xp.abs(g).max() for g in grads]
        total = xp.max(xp.stack(norms))
    else:
        norms = [(xp.abs(g.astype(xp.float64)) ** norm_type).sum() for g in grads]
        total = xp.sum(xp.stack(norms)) ** (1.0 / norm_type)
    total = total.astype(grads[0].dtype)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                           "`parameters` is non-finite, so it cannot be clipped. Set "
                           "`error_if_nonfinite=False` to clip anyway")
    scale = min(max_norm / (float(total) + 1e-6), 1.0)
    for g in grads:
        g *= g.dtype.type(scale)
    return tensor_from_array(xp.asarray(total))
