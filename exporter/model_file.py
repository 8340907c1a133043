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

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

from modelkit.exporter.errors import ExportError

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
        model = self._call("build")
        inputs = self._call("example_inputs")
        if not isinstance(inputs, (tuple, list)):
            inputs = (inputs,)
        return model, tuple(inputs)

    def _call(self, name: str):
        try:
            return getattr(self.module, name)()
        except Exception as error:
            raise ExportError(f"{self.path}: {name}() raised {type(error).__name__}: "
                              f"{error}") from error


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
    except Exception as error:
        sys.modules.pop(name, None)
        raise ExportError(f"{path}: importing it failed: {type(error).__name__}: {error}") \
            from error
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module
