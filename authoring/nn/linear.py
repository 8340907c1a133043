"""`Linear`, `Identity`, `Flatten`.

Example:
    >>> import modelkit.authoring as mk
    >>> layer = Linear(4, 2)
    >>> layer.weight.shape, layer(mk.zeros(3, 4)).shape
    (modelkit.Size([2, 4]), modelkit.Size([3, 2]))
"""

from __future__ import annotations

import math

from modelkit.authoring.nn import functional as F
from modelkit.authoring.nn import init
from modelkit.authoring.nn.module import Module
from modelkit.authoring.nn.parameter import Parameter

__all__ = ["Identity", "Linear", "Flatten", "empty_parameter", "reset_fan_in_uniform"]


def empty_parameter(*shape: int, dtype=None, device=None) -> Parameter:
    """A Parameter of the given shape, to be filled by an initialiser."""
    import modelkit.authoring as mk
    return Parameter(mk.empty(*shape, dtype=dtype, device=device))


def reset_fan_in_uniform(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default for Linear and Conv: kaiming_uniform_(a=sqrt(5)) on the weight, which
    is U(+-1/sqrt(fan_in)), and the bias from the same range."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = init.fan_in_and_fan_out(weight)[0]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as PyTorch's does."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """`y = x @ weight.T + bias`, weight (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = empty_parameter(out_features, in_features, dtype=dtype, device=device)
        if bias:
            self.bias = empty_parameter(out_features, dtype=dtype, device=device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_fan_in_uniform(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten dims `start_dim`..`end_dim` into one (by default all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
