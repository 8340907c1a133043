"""Custom ops as plain Python: an app registers kernels for the ops of its own domain.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> from modelkit.edge_runtime.session import Session
    >>> register_kernel("com.example", "Square", lambda xp, x: (x * x,))
    >>> m = Model(inputs=[ValueInfo("x", "float32", (2,))], outputs=[ValueInfo("y", "float32", (2,))],
    ...           nodes=[Node("Square", ["x"], ["y"], domain="com.example")],
    ...           opsets={"": 17, "com.example": 1})
    >>> Session(m).run({"x": np.array([2, 3], np.float32)})["y"]
    array([4., 9.], dtype=float32)
"""

from __future__ import annotations

from typing import Callable

from modelkit.edge_runtime.kernels import registry


def register_kernel(domain: str, op_type: str, fn: Callable, since: int = 1) -> None:
    """Make `fn(xp, *inputs, **attrs) -> tuple of arrays` the kernel of `domain::op_type` for
    opsets `since` and up. `xp` is the array module (numpy on CPU); inputs arrive in the node's
    order (None for an omitted optional one), attributes by name. Sessions loaded afterwards
    use it; a later registration with the same `since` replaces it.

    Example: see the module docstring.
    """
    registry.register(op_type, fn, domain=domain, since=since)
