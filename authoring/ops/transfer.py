"""The `to_device` primitive: a copy between cpu and cuda that autograd differentiates (the
gradient travels back to the source device), exported as Identity.

Example:
    >>> import modelkit.authoring as mk
    >>> to_device(mk.ones(2), mk.device("cpu")).device
    device(type='cpu')
"""

from __future__ import annotations

from modelkit.authoring.device import array_device, check, move_array
from modelkit.authoring.ops.registry import OPS, Onnx, apply, primitive
from modelkit.authoring.tensor import Tensor


@primitive("to_device", onnx=Onnx("Identity"), saves_inputs=False)
def _to_device(xp, x, device):
    return move_array(x, device)


@_to_device.vjp
def _to_device_vjp(c, g):
    return (move_array(g, array_device(c.arrays[0])),)


def to_device(x: Tensor, device) -> Tensor:
    """`x` on `device` (itself when it is there already).

    Example:
        >>> import modelkit.authoring as mk
        >>> t = mk.ones(1); to_device(t, "cpu") is t
        True
    """
    target = check(device)  # "cuda" resolves to "cuda:<current>", so equality is exact here
    if x.device == target:
        return x
    return apply(OPS["to_device"], x, device=target)
