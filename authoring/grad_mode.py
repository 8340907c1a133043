"""Whether ops record the autograd graph: `no_grad`, `enable_grad`, `set_grad_enabled`.

Each works as a context manager and as a decorator, as in PyTorch.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.ones(2, requires_grad=True)
    >>> with mk.no_grad():
    ...     (x * 2).requires_grad
    False
"""

from __future__ import annotations

import functools
import threading


class _State(threading.local):
    """Per-thread switches read by every op call, thread-local as in PyTorch (a server thread
    running under no_grad does not switch recording off for a training thread)."""

    def __init__(self):
        self.grad_enabled = True
        self.anomaly = False


state = _State()


def is_grad_enabled() -> bool:
    """True when ops record the graph.

    Example:
        >>> is_grad_enabled()
        True
    """
    return state.grad_enabled


class _GradModeContext:
    """Base of the grad-mode switches: a context manager that is also a decorator."""

    enabled: bool

    def __enter__(self):
        self._previous = state.grad_enabled
        state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        state.grad_enabled = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)
        return wrapper

    def _fresh(self):
        return type(self)()


class _BareDecoratorContext(_GradModeContext):
    """Also usable without parentheses, `@no_grad`, as in PyTorch 2."""

    def __new__(cls, fn=None):
        context = super().__new__(cls)
        return context if fn is None else context(fn)


class no_grad(_BareDecoratorContext):  # noqa: N801
    """Ops inside do not record the graph (inference, optimizer updates).

    Example:
        >>> @no_grad()
        ... def infer(x):
        ...     return x * 2
    """

    enabled = False


class enable_grad(_BareDecoratorContext):  # noqa: N801
    """Re-enable recording inside a `no_grad` block.

    Example:
        >>> with no_grad(), enable_grad():
        ...     is_grad_enabled()
        True
    """

    enabled = True


class inference_mode(_GradModeContext):  # noqa: N801
    """PyTorch's inference_mode: here the same as no_grad (mode=False leaves recording on).

    Example:
        >>> with inference_mode():
        ...     is_grad_enabled()
        False
    """

    def __init__(self, mode: bool = True):
        self.enabled = not mode

    def _fresh(self):
        return inference_mode(not self.enabled)


class set_grad_enabled(_GradModeContext):  # noqa: N801
    """Switch recording on or off; takes effect at once, and as a context manager restores
    the previous mode on exit.

    Example:
        >>> with set_grad_enabled(False):
        ...     is_grad_enabled()
        False
    """

    def __init__(self, mode: bool):
        self.enabled = bool(mode)
        self._previous = state.grad_enabled
        state.grad_enabled = self.enabled

    def __enter__(self):
        pass

    def __call__(self, fn):
        # NOTE: used as a decorator, construction must not switch the mode for the caller.
        state.grad_enabled = self._previous
        return super().__call__(fn)

    def _fresh(self):
        return set_grad_enabled(self.enabled)
