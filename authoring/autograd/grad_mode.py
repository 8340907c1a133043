"""Grad-mode switches under their PyTorch path (`torch.autograd.grad_mode`); they live in
`modelkit.authoring.grad_mode`, which the op dispatcher reads without importing autograd.

Example:
    >>> from modelkit.authoring.autograd.grad_mode import no_grad
    >>> with no_grad():
    ...     pass
"""

from modelkit.authoring.grad_mode import (  # noqa: F401
    enable_grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
