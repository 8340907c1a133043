"""Autograd: reverse-mode differentiation of the graph recorded as code runs (`mk.autograd`).

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.tensor([1.0, 2.0], requires_grad=True)
    >>> mk.autograd.grad((x ** 3).sum(), x)
    (tensor([ 3., 12.]),)
"""

from modelkit.authoring.grad_mode import (
    enable_grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from modelkit.authoring.autograd.anomaly import (
    detect_anomaly,
    is_anomaly_enabled,
    set_detect_anomaly,
)
from modelkit.authoring.autograd.engine import backward, grad
from modelkit.authoring.autograd.function import Function, FunctionCtx
from modelkit.authoring.autograd.gradcheck import GradcheckError, gradcheck

__all__ = [
    "Function", "FunctionCtx", "GradcheckError", "backward", "detect_anomaly", "enable_grad",
    "grad", "gradcheck", "is_anomaly_enabled", "is_grad_enabled", "no_grad",
    "set_detect_anomaly", "set_grad_enabled",
]
