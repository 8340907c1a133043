"""The one kernel registry, keyed by (domain, ONNX op type), with opset versions as data.

A kernel is a function `fn(xp, *inputs, **attrs) -> tuple of arrays`: `xp` is the array module
(numpy or cupy), `inputs` are the node's input arrays in ONNX order (None for an omitted optional
input), `attrs` are the node's ONNX attributes by their ONNX names (absent ones take the ONNX
default in the function signature). It always returns a tuple, one entry per ONNX output.

Versions follow the onnx reference evaluator: a kernel registered with `since=13` serves
opsets 13 and up until a newer registration takes over, so `lookup("", "Softmax", 11)` and
`lookup("", "Softmax", 13)` may give different functions.

Example:
    >>> import numpy as np
    >>> @kernel("MyRelu", domain="example.doc")
    ... def my_relu(xp, x):
    ...     return (xp.maximum(x, 0),)
    >>> lookup("example.doc", "MyRelu", 1).fn(np, np.array([-1.0, 2.0]))
    (array([0., 2.]),)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable

ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class KernelEntry:
    """A registered kernel. `wants_n_outputs`: the runtime passes `n_outputs=` (the node's output
    count), for ops such as Split whose result count depends on the node, not the inputs."""

    fn: Callable
    since: int
    wants_n_outputs: bool = False


_KERNELS: dict[tuple[str, str], list[KernelEntry]] = {}


def _canonical_domain(domain: str) -> str:
    return "" if domain in ONNX_DOMAINS else domain


def register(op_type: str, fn: Callable, *, domain: str = "", since: int = 1,
             wants_n_outputs: bool = False) -> Callable:
    """Register `fn` as the kernel of `domain::op_type` for opsets `since` and up.

    Example:
        >>> register("Twice", lambda xp, x: (x * 2,), domain="example.doc").__name__
        '<lambda>'
    """
    entries = _KERNELS.setdefault((_canonical_domain(domain), op_type), [])
    entries[:] = [e for e in entries if e.since != since]
    bisect.insort(entries, KernelEntry(fn, since, wants_n_outputs), key=lambda e: e.since)
    return fn


def kernel(op_type: str, *, domain: str = "", since: int = 1, wants_n_outputs: bool = False):
    """Decorator form of `register`.

    Example:
        >>> @kernel("Thrice", domain="example.doc")
        ... def thrice(xp, x):
        ...     return (x * 3,)
    """
    def decorate(fn):
        return register(op_type, fn, domain=domain, since=since, wants_n_outputs=wants_n_outputs)
    return decorate


def lookup(domain: str, op_type: str, opset: int) -> KernelEntry | None:
    """The newest kernel of `domain::op_type` registered for an opset not above `opset`, or None.

    Example:
        >>> lookup("example.doc", "NoSuchOp", 17) is None
        True
    """
    entries = _KERNELS.get((_canonical_domain(domain), op_type))
    if not entries:
        return None
    i = bisect.bisect_right([e.since for e in entries], opset)
    return entries[i - 1] if i else None


def registered_ops() -> list[tuple[str, str]]:
    """Every (domain, op_type) that has at least one kernel, sorted.

    Example:
        >>> ("example.doc", "Thrice") in registered_ops()
        True
    """
    return sorted(_KERNELS)
