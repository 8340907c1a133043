"""`Parameter`: a Tensor that a Module registers as trainable, plus the few array-level helpers
that state loading, initialisers and optimizers use to overwrite a tensor's values in place.

Example:
    >>> import modelkit.authoring as mk
    >>> p = Parameter(mk.zeros(2))
    >>> p.requires_grad, isinstance(p, mk.Tensor)
    (True, True)
"""

from __future__ import annotations

import numpy as np

from modelkit.authoring.device import check, move_array
from modelkit.authoring.tensor import Tensor

__all__ = ["Parameter", "Tensor", "as_array", "assign_array", "tensor_from_array"]


class Parameter(Tensor):
    """A leaf Tensor that requires grad by default and shares `data`'s array (no copy)."""

    __slots__ = ()

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        array = np.empty(0, np.float32) if data is None else as_array(data)
        self.array = array
        self.requires_grad = False
        self.grad = None
        self._node = None
        self._index = 0
        self._version = data._version if isinstance(data, Tensor) else [0]
        self._hooks = None
        self._retains_grad = False
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def as_array(value) -> np.ndarray:
    """The array behind a Tensor, or `value` as an array (numpy arrays, lists).

    Example:
        >>> as_array([1, 2]).tolist()
        [1, 2]
    """
    return value.array if isinstance(value, Tensor) else np.asarray(value)


def assign_array(target: Tensor, source) -> None:
    """Overwrite `target`'s values in place with `source` (cast to target's dtype), as
    `target.copy_(source)` under no_grad; bumps the version so stale autograd graphs notice.

    Example:
        >>> import modelkit.authoring as mk
        >>> t = mk.zeros(2); assign_array(t, [1, 2]); t
        tensor([1., 2.])
    """
    source = as_array(source)
    if not isinstance(target.array, np.ndarray) or not isinstance(source, np.ndarray):
        source = move_array(source, target.device)  # e.g. a cpu state_dict into a cuda model
    target.array[...] = source
    target._version[0] += 1


def tensor_from_array(array, device=None) -> Tensor:
    """Wrap an array as a Tensor, without copying when it is on `device` already (None: where it
    is); else a copy on `device` (how `mk.load(map_location=)` places checkpoints).

    Example:
        >>> tensor_from_array(np.ones(2, np.float32))
        tensor([1., 1.])
    """
    if device is not None:
        array = move_array(array, check(device))
    return Tensor._wrap(array)
