"""`mk.save` / `mk.load`: state dicts as safetensors files, never pickle.

A safetensors file is a JSON header (name -> dtype, shape, byte range) followed by raw
little-endian data, so loading runs no code from the file. Files written by PyTorch's
`safetensors.torch.save_file(model.state_dict(), path)` load here unchanged.

Example:
    >>> import os, tempfile, modelkit.authoring as mk
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save({"w": mk.ones(2, 3)}, path)
    >>> load(path)["w"].shape
    modelkit.Size([2, 3])
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Mapping

import numpy as np

from modelkit.authoring.errors import CheckpointError
from modelkit.authoring.nn.parameter import Tensor, tensor_from_array
from modelkit.edge_runtime.atomic_file import write_atomically

__all__ = ["save", "load"]


def _arrays_to_save(obj, path) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"cannot save {type(obj).__name__} to {path}: mk.save writes safetensors files, "
            "which hold a flat mapping of str -> Tensor (e.g. model.state_dict())")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise CheckpointError(f"cannot save key {name!r} to {path}: keys must be str")
        if isinstance(value, Tensor):
            value = value.array if value.device.type == "cpu" else value.array.get()
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"cannot save {name!r} ({type(value).__name__}) to {path}: values must be "
                "Tensors or numpy arrays (safetensors stores tensors only)")
        # NOTE: not np.ascontiguousarray, which turns 0-d arrays (num_batches_tracked) into 1-d.
        arrays[name] = value if value.flags.c_contiguous else value.copy(order="C")
    return arrays


def save(obj: Mapping, f: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a `str -> Tensor` mapping to `f` as safetensors; `metadata` is stored as strings.

    The file is written to a temporary name in the same folder and renamed over `f`, so a
    crash never leaves a half-written checkpoint behind.

    Example:
        >>> import os, tempfile, modelkit.authoring as mk
        >>> save(mk.nn.Linear(2, 1).state_dict(), os.path.join(tempfile.mkdtemp(), "m.st"))
    """
    from safetensors.numpy import save as to_bytes

    path = os.fspath(f)
    data = to_bytes(_arrays_to_save(obj, path), metadata=metadata)
    write_atomically(path, [data])


def load(f: str | os.PathLike, map_location=None) -> "OrderedDict[str, Tensor]":
    """Read a safetensors file into an ordered `str -> Tensor` dict, ready for
    `model.load_state_dict`. A file that is not safetensors, or is truncated, raises
    `CheckpointError` naming the file.

    Example:
        >>> import os, tempfile, modelkit.authoring as mk
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> save({"a": mk.zeros(1), "b": mk.ones(1)}, path)
        >>> sorted(load(path))
        ['a', 'b']
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as from_bytes

    path = os.fspath(f)
    with open(path, "rb") as source:
        data = source.read()
    try:
        arrays = from_bytes(data)
    except (SafetensorError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({len(data)} bytes): {error}. "
            "mk.load reads safetensors files only (PyTorch: "
            "safetensors.torch.save_file(model.state_dict(), path))") from None
    return OrderedDict((name, tensor_from_array(array, map_location))
                       for name, array in arrays.items())
