"""Adam (Kingma & Ba, https://arxiv.org/abs/1412.6980) and AdamW (decoupled weight decay,
Loshchilov & Hutter, https://arxiv.org/abs/1711.05101), as `torch.optim.Adam` / `AdamW`.

Example:
    >>> import modelkit.authoring as mk
    >>> w = mk.nn.Parameter(mk.tensor([1.0]))
    >>> opt = Adam([w], lr=0.1)
    >>> (w * 3).sum().backward(); opt.step()
    >>> round(w.item(), 4)  # the first Adam step moves each weight by about lr
    0.9
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]

_CHUNK = 65536
"""Elements per piece of a large parameter's CPU update: five float32 pieces fit in L2."""


def _adam_step(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, beta1, beta2,
               step_size, bias2_sqrt, eps):
    """The Adam update of arrays of one shape in place, with one scratch array for every
    temporary (`max_exp_avg_sq` is None without amsgrad)."""
    exp_avg *= beta1
    exp_avg += xp.multiply(grad, 1 - beta1, out=scratch)
    exp_avg_sq *= beta2
    xp.multiply(grad, 1 - beta2, out=scratch)
    exp_avg_sq += xp.multiply(scratch, grad, out=scratch)
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        second = xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    denom = xp.sqrt(second, out=scratch)
    denom /= bias2_sqrt
    denom += eps
    update = xp.divide(exp_avg, denom, out=scratch)
    update *= step_size
    param -= update


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient (`amsgrad` keeps the max second moment)."""

    decoupled_weight_decay = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__} expects lr, eps and weight_decay >= 0, "
                             f"got lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__} expects betas in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def update(self, param, grad, state, group):
        xp = array_module(param)
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param)
        state["step"] += 1
        if xp is not np and not group["amsgrad"]:
            self._fused_update(xp, param, grad, state, group, lr, beta1, beta2)
            return
        if wd and self.decoupled_weight_decay:
            param *= 1 - lr * wd
        elif wd:
            grad = grad + wd * param
        arrays = (param, grad, state["exp_avg"], state["exp_avg_sq"],
                  state.get("max_exp_avg_sq"))
        step = state["step"]
        coefficients = (beta1, beta2, lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step),
                        group["eps"])
        present = [a for a in arrays if a is not None]
        if not all(a.flags.c_contiguous for a in present) or param.size <= _CHUNK:
            _adam_step(xp, *arrays, xp.empty_like(param), *coefficients)
            return
        # NOTE: a cache-sized chunk at a time keeps the ~12 passes of the update in L2
        # instead of streaming every parameter-sized array from memory each pass
        flat = [None if a is None else a.reshape(-1) for a in arrays]
        scratch = xp.empty(_CHUNK, dtype=param.dtype)
        for start in range(0, param.size, _CHUNK):
            part = slice(start, start + _CHUNK)
            pieces = [None if a is None else a[part] for a in flat]
            _adam_step(xp, *pieces, scratch[:pieces[0].size], *coefficients)

    def _fused_update(self, cupy, param, grad, state, group, lr, beta1, beta2):
        """The whole update as one CUDA kernel (see fused_cuda)."""
        from modelkit.authoring.optim.fused_cuda import adam_step
        wd, step = group["weight_decay"], state["step"]
        decoupled = self.decoupled_weight_decay
        adam_step(cupy, param, grad, state["exp_avg"], state["exp_avg_sq"],
                  l2=0.0 if decoupled else wd, decay=1 - lr * wd if decoupled else 1.0,
                  beta1=beta1, beta2=beta2, step_size=lr / (1 - beta1 ** step),
                  bias2_sqrt=math.sqrt(1 - beta2 ** step), eps=group["eps"])


class AdamW(Adam):
    """Adam whose weight decay shrinks the weights directly (`p *= 1 - lr * wd`) instead of
    entering the gradient moments. Default weight_decay 0.01, as in PyTorch.

    Example:
        >>> AdamW.__mro__[1].__name__
        'Adam'
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
