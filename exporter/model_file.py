"""Load a user's `model.py` (DESIGN §7): `build()` returns the model with its trained weights,
`example_inputs()` a tuple of example arrays; optional `input_names`, `output_names`,
`dynamic_axes`. Every problem is an `ExportError` whose one line says what to write.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.py")
    >>> _ = open(path, "w").write("import numpy as np\\nimport modelkit.authoring as mk\\n"
    ...     "def build():\\n    return mk.nn.Linear(3, 2)\\n"
    ...     "def example_inputs():\\n    return (np.ones((1, 3), np.float32),)\\n"
    ...     "dynamic_axes = {'x': {0: 'batch'}}\\n")
    >>> spec = load(path); spec.dynamic_axes
    {'x': {0: 'batch'}}
    >>> model, inputs = spec.instantiate(); inputs[0].shape
    (1, 3)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

from modelkit.exporter.errors import ExportError
from modelkit.exporter.trace import construction_sites

_WHAT_TO_DEFINE = ("define build() returning the model (trained weights loaded) and "
                   "example_inputs() returning a tuple of example arrays")


@dataclass
class ModelFile:
    """A loaded model.py: its module and the export settings it declares."""

    path: Path
    module: ModuleType
    input_names: Optional[list] = None
    output_names: Optional[list] = None
    dynamic_axes: Optional[dict] = None

    def instantiate(self) -> tuple:
        """(model, example inputs as a tuple), from build() and example_inputs()."""
        # Layers built by the user's build() are traced back to its lines (nodes of a built-in
        # container exported whole run no user code in forward).
        with construction_sites():
            model = self._call("build")
        inputs = self._call("example_inputs")
        if not isinstance(inputs, (tuple, list)):
            inputs = (inputs,)
        return model, tuple(inputs)

    def _call(self, name: str):
        try:
            return getattr(self.module, name)()
        except (Exception, SystemExit) as error:
            raise ExportError(f"{self.path}: {name}() raised {_describe(error)}") from error


def load(path) -> ModelFile:
    """Import the model file at `path` (its folder importable while it loads) and read its
    definitions; ExportError when it cannot be imported or lacks build / example_inputs."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file (a model.py must {_WHAT_TO_DEFINE})")
    module = _import(path)
    missing = [f"{name}()" for name in ("build", "example_inputs")
               if not callable(getattr(module, name, None))]
    if missing:
        raise ExportError(f"{path} has no {' and no '.join(missing)}: {_WHAT_TO_DEFINE}")
    spec = ModelFile(path, module)
    for name, kind in (("input_names", (list, tuple)), ("output_names", (list, tuple)),
                       ("dynamic_axes", dict)):
        value = getattr(module, name, None)
        if value is not None and not isinstance(value, kind):
            expected = "a dict like {'x': {0: 'batch'}}" if kind is dict else "a list of names"
            raise ExportError(f"{path}: {name} must be {expected}, got "
                              f"{type(value).__name__}")
        setattr(spec, name, list(value) if isinstance(value, tuple) else value)
    return spec


def _import(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_modelkit_model_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    # SystemExit too: a model.py that calls sys.exit() or exit() must not end the CLI with its
    # own exit code.
    except (Exception, SystemExit) as error:
        sys.modules.pop(name, None)
        raise ExportError(f"{path}: importing it failed: {_describe(error)}") from error
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _describe(error: BaseException) -> str:
    """`Type: message`, even for an exception whose own __str__ raises."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001  (the user's exception class; its str() is not ours)
        message = "(its message cannot be shown)"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class _TimeUp(BaseException):
    """Raised inside the user's code by the timer; a BaseException so that the user's own
    `except Exception:` cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: Optional[float], what: str):
    """Run the body with a wall-clock limit: after `seconds`, the Python code running (a
    model.py's import, build(), example_inputs() or the trace) is interrupted and ExportError
    raised. None means no limit. Works in the main thread only (it uses SIGALRM), which is where
    the CLI runs; a limit asked for elsewhere is an ExportError.

    Example:
        >>> import time
        >>> with time_limit(0.05, "loading model.py"):
        ...     time.sleep(5)
        Traceback (most recent call last):
        ...
        modelkit.exporter.errors.ExportError: loading model.py took longer than 0.05 s (--timeout); does its code loop forever or wait on something?
    """
    if seconds is None:
        yield
        return
    if seconds <= 0:
        raise ExportError(f"a time limit must be > 0 seconds, got {seconds}")
    if threading.current_thread() is not threading.main_thread():
        raise ExportError("a time limit works only in the main thread (it uses SIGALRM)")

    def interrupt(*_):
        raise _TimeUp()

    previous = signal.signal(signal.SIGALRM, interrupt)
    # The timer repeats, so code that catches even BaseException and carries on is
    # interrupted again.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    except _TimeUp:
        raise ExportError(f"{what} took longer than {seconds:g} s (--timeout); does its code loop "
                          "forever or wait on something?") from None
    finally:
        _disarm(previous)


def _disarm(previous) -> None:
    # The timer may fire once more while being switched off; only then does this loop repeat.
    while True:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            return
        except _TimeUp:
            continue
