"""One CUDA kernel per parameter update for SGD (momentum) and Adam/AdamW on cupy arrays: the
numpy path of each optimizer runs five to ten array passes; these run one. Compiled by cupy
on first use; nothing here runs for cpu parameters.

Each kernel computes exactly what the optimizer's array-module code computes (same order of
operations, in the parameter's dtype), so cpu and cuda training agree to rounding.

Example (needs a GPU; `Adam.step` calls `adam_step` for every cuda parameter):
    >>> import modelkit.authoring as mk
    >>> w = mk.nn.Parameter(mk.ones(3, device="cuda"))  # doctest: +SKIP
    >>> opt = mk.optim.Adam([w], lr=0.1)  # doctest: +SKIP
    >>> (w * 2).sum().backward(); opt.step(); w.detach().cpu().tolist()  # doctest: +SKIP
    [0.9000000357627869, 0.9000000357627869, 0.9000000357627869]
"""

from __future__ import annotations

import functools

_SGD = """
    T g = grad + weight_decay * param;
    buf = first ? g : momentum * buf + (1 - dampening) * g;
    param = param - lr * (nesterov ? g + momentum * buf : buf);
"""

_ADAM = """
    T g = grad + l2 * param;
    param = param * decay;
    exp_avg = beta1 * exp_avg + (1 - beta1) * g;
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g;
    param = param - step_size * exp_avg / (sqrt(exp_avg_sq) / bias2_sqrt + eps);
"""


@functools.cache
def _kernels(cupy):
    sgd = cupy.ElementwiseKernel(
        "T grad, T weight_decay, T momentum, T dampening, T lr, bool nesterov, bool first",
        "T param, T buf", _SGD, "modelkit_sgd_step")
    adam = cupy.ElementwiseKernel(
        "T grad, T l2, T decay, T beta1, T beta2, T step_size, T bias2_sqrt, T eps",
        "T param, T exp_avg, T exp_avg_sq", _ADAM, "modelkit_adam_step")
    return sgd, adam


def sgd_step(cupy, param, grad, buf, *, lr, momentum, dampening, weight_decay, nesterov,
             first) -> None:
    """SGD with momentum on cupy arrays, in place: param and the momentum buffer `buf`."""
    _kernels(cupy)[0](grad, weight_decay, momentum, dampening, lr, nesterov, first, param, buf)


def adam_step(cupy, param, grad, exp_avg, exp_avg_sq, *, l2, decay, beta1, beta2, step_size,
              bias2_sqrt, eps) -> None:
    """Adam / AdamW on cupy arrays, in place: `l2` is Adam's weight decay added to the gradient,
    `decay` AdamW's factor on the weights (1 - lr * wd), `step_size` lr / (1 - beta1^t)."""
    _kernels(cupy)[1](grad, l2, decay, beta1, beta2, step_size, bias2_sqrt, eps, param,
                      exp_avg, exp_avg_sq)
