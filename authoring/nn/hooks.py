"""Removable hook handles, shared by modules and the global module hooks.

Example:
    >>> hooks = {}
    >>> handle = RemovableHandle(hooks)
    >>> hooks[handle.id] = print
    >>> handle.remove(); hooks
    {}
"""

from __future__ import annotations

import itertools

_next_id = itertools.count()


class RemovableHandle:
    """Returned by `register_*_hook`; `remove()` unregisters the hook (also as a context manager)."""

    def __init__(self, hooks_dict: dict):
        self.hooks_dict = hooks_dict
        self.id = next(_next_id)

    def remove(self) -> None:
        self.hooks_dict.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def add_hook(hooks_dict: dict, hook) -> RemovableHandle:
    """Store `hook` in `hooks_dict` (in registration order) and return its handle.

    Example:
        >>> hooks = {}
        >>> add_hook(hooks, print).id in hooks
        True
    """
    handle = RemovableHandle(hooks_dict)
    hooks_dict[handle.id] = hook
    return handle
