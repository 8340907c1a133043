"""Model inputs for the command line: open a model file as an edge-runtime session, read feeds
from .npy / .npz files, or make random ones from the model's input spec.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime import TensorSpec
    >>> feeds = random_feeds([TensorSpec("x", "float32", ("batch", 3))], {"batch": 2})
    >>> feeds["x"].shape, feeds["x"].dtype
    ((2, 3), dtype('float32'))
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from modelkit.converters.convert import model_format
from modelkit.edge_runtime import InvalidInputError, Session, TensorSpec, load, load_onnx


def open_session(path, device: str = "cpu", *, profile: bool = False) -> Session:
    """An edge-runtime session for a `.mkb` or `.onnx` file (by suffix).

    Example:
        >>> open_session("model.txt")
        Traceback (most recent call last):
        ...
        modelkit.converters.convert.UnknownSuffixError: model.txt: unknown model suffix '.txt'; expected .onnx or .mkb
    """
    kind = model_format(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such file")
    return (load_onnx if kind == "onnx" else load)(os.fspath(path), device, profile=profile)


def concrete_shape(spec: TensorSpec, dims: dict[str, int]) -> tuple[int, ...]:
    """`spec`'s shape with each symbolic dim taken from `dims` (1 when not given).

    Example:
        >>> concrete_shape(TensorSpec("x", "float32", ("batch", 4)), {"batch": 8})
        (8, 4)
    """
    if spec.shape is None:
        raise InvalidInputError(f"input {spec.name!r} has unknown rank; give it as a file")
    return tuple(dims.get(d, 1) if isinstance(d, str) else d for d in spec.shape)


def random_feeds(specs: list[TensorSpec], dims: Optional[dict[str, int]] = None,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching `specs`: standard normal floats, integers in [0, 10), random
    booleans; symbolic dims from `dims` (1 when not given).

    Example: see the module docstring.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, dims or {})
        if spec.dtype in ("string", "bfloat16"):
            raise InvalidInputError(f"input {spec.name!r} is {spec.dtype}: random values are "
                                    "not supported for it; give it as a file")
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def read_feeds(items: list[str], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Feeds from `name=file.npy` items, and from `file.npz` items (arrays by input name; with
    one input, a single-array `.npz` or `.npy` needs no name). Unknown names raise
    `InvalidInputError` listing the model's inputs.

    Example:
        >>> read_feeds(["y=y.npy"], [TensorSpec("x", "float32", (2,))])
        Traceback (most recent call last):
        ...
        modelkit.edge_runtime.errors.InvalidInputError: the model has no input 'y'; its inputs are ['x']
    """
    names = [s.name for s in specs]
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        if sep and name not in names:
            raise InvalidInputError(f"the model has no input {name!r}; its inputs are {names}")
        arrays = read_arrays(path)
        for key, array in arrays.items():
            target = name or key
            if target not in names and len(names) == 1 and len(arrays) == 1:
                target = names[0]
            if target not in names:
                raise InvalidInputError(f"{path}: array {key!r} names no input of the model; its "
                                        f"inputs are {names} (name it: --input NAME={path})")
            feeds[target] = array
    return feeds


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of a `.npz` file by name, or of a `.npy` file under its file name's stem.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(path, np.zeros(2))
        >>> read_arrays(path)
        {'x': array([0., 0.])}
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InvalidInputError(f"{path}: not a .npy or .npz file ({error})") from error
    if isinstance(loaded, np.ndarray):
        return {os.path.splitext(os.path.basename(path))[0]: loaded}
    with loaded:
        return {key: loaded[key] for key in loaded.files}
