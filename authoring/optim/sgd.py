"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, following
`torch.optim.SGD`'s update exactly.

Example:
    >>> import modelkit.authoring as mk
    >>> w = mk.nn.Parameter(mk.tensor([1.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     opt.zero_grad(); (w * 2).sum().backward(); opt.step()
    >>> round(w.item(), 4)  # 1 - 0.1*2 - 0.1*(0.9*2 + 2)
    0.42
"""

from __future__ import annotations

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """`p -= lr * v`, with `v = momentum * v + (1 - dampening) * g` when momentum is set."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD expects lr, momentum and weight_decay >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def update(self, param, grad, state, group):
        xp = array_module(param)
        if group["momentum"] and xp is not np:
            self._fused_update(xp, param, grad, state, group)
            return
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * param
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.array(grad, copy=True)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        param -= group["lr"] * grad

    @staticmethod
    def _fused_update(cupy, param, grad, state, group):
        """The momentum update as one CUDA kernel (see fused_cuda)."""
        from modelkit.authoring.optim.fused_cuda import sgd_step
        first = "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = cupy.empty_like(param)
        sgd_step(cupy, param, grad, state["momentum_buffer"], lr=group["lr"],
                 momentum=group["momentum"], dampening=group["dampening"],
                 weight_decay=group["weight_decay"], nesterov=group["nesterov"], first=first)
