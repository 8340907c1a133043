"""The model store: a directory the operator fills, and the only place models are served from.

Layout:
    store/
      mnist.mkb                     one version, called "1"
      resnet/config.json            optional: batching, workers, timeout, handler
      resnet/handler.py             optional: preprocess/postprocess for raw payloads
      resnet/1/model.mkb            versions are folder names; the default is the newest
      resnet/2/model.mkb

A name is letters, digits, `_`, `-` and `.` (no `..`, no `/`); every path it leads to must resolve
inside the store, so `..`, absolute paths and symlinks out of the store are refused.

Example:
    >>> import os, tempfile
    >>> store = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(store, "m", "2")); open(os.path.join(store, "m", "2", "model.mkb"), "wb").close()
    >>> [(e.name, e.version) for e in find_model(store, "m", ModelConfig())]
    [('m', '2')]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from typing import Optional

from modelkit.edge_runtime.serving.errors import ModelStoreError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FLAT_VERSION = "1"


@dataclass(frozen=True)
class ModelConfig:
    """How one model is served. `max_batch_size` counts rows (1 = no batching);
    `max_queue_size` bounds the requests waiting for a worker (full -> 503)."""

    max_batch_size: int = 1
    max_queue_delay_us: int = 5000
    workers: int = 1
    timeout_s: float = 30.0
    max_queue_size: int = 100
    handler: Optional[str] = None


# config.json keys -> (field, conversion); TorchServe's names are aliases.
_CONFIG_KEYS = {
    "max_batch_size": ("max_batch_size", int),
    "batch_size": ("max_batch_size", int),
    "max_queue_delay_us": ("max_queue_delay_us", int),
    "max_batch_delay": ("max_queue_delay_us", lambda ms: int(round(float(ms) * 1000))),
    "workers": ("workers", int),
    "min_worker": ("workers", int),
    "timeout_s": ("timeout_s", float),
    "response_timeout": ("timeout_s", float),
    "max_queue_size": ("max_queue_size", int),
    "job_queue_size": ("max_queue_size", int),
}
_LIMITS = {"max_batch_size": (1, 1 << 16), "max_queue_delay_us": (0, 10_000_000),
           "workers": (1, 64), "timeout_s": (0.001, 86400.0), "max_queue_size": (1, 1 << 20)}


@dataclass(frozen=True)
class ModelEntry:
    """One servable model version: where its file is and how to serve it."""

    name: str
    version: str
    path: str
    config: ModelConfig


def apply_config(base: ModelConfig, values: dict, where: str) -> ModelConfig:
    """`base` with `values` (config.json keys or their TorchServe aliases) applied.

    Example:
        >>> apply_config(ModelConfig(), {"batch_size": 8, "max_batch_delay": 2}, "x").max_queue_delay_us
        2000
    """
    changes = {}
    for key, value in values.items():
        if key == "handler":
            changes["handler"] = value
            continue
        if key not in _CONFIG_KEYS:
            raise ModelStoreError(f"{where}: unknown key {key!r}; expected one of"
                                  f" {sorted([*_CONFIG_KEYS, 'handler'])}")
        field, convert = _CONFIG_KEYS[key]
        try:
            if isinstance(value, bool):
                raise ValueError("a boolean")
            changes[field] = convert(value)
        except (TypeError, ValueError, OverflowError) as e:
            raise ModelStoreError(f"{where}: {key}={value!r} is not a number ({e})") from None
        low, high = _LIMITS[field]
        if not low <= changes[field] <= high:
            raise ModelStoreError(f"{where}: {key}={value!r} is out of range [{low}, {high}]")
    return dataclasses.replace(base, **changes)


def check_name(name: str) -> str:
    """Return `name` if it may name a model in the store, else raise `ModelStoreError`.

    Example:
        >>> check_name("../etc")
        Traceback (most recent call last):
        ...
        modelkit.edge_runtime.serving.errors.ModelStoreError: model name '../etc' is not allowed: use letters, digits, '_', '-' and '.' (no '..', no '/'), up to 128 characters
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ModelStoreError(f"model name {name!r} is not allowed: use letters, digits, '_', '-'"
                              " and '.' (no '..', no '/'), up to 128 characters")
    return name


def list_names(store: str) -> list[str]:
    """Every model name in the store (folders and `NAME.mkb` files), sorted.

    Example:
        >>> import tempfile
        >>> list_names(tempfile.mkdtemp())
        []
    """
    names = set()
    for entry in os.listdir(store):
        stem = entry[:-4] if entry.endswith(".mkb") else entry
        if _NAME.fullmatch(stem) and ".." not in stem and (
                entry.endswith(".mkb") or os.path.isdir(os.path.join(store, entry))):
            names.add(stem)
    return sorted(names)


def find_model(store: str, name: str, defaults: ModelConfig) -> list[ModelEntry]:
    """The versions of model `name` (a bare name, or `NAME.mkb`), oldest first, each with its
    config; raises `ModelStoreError` for anything that cannot be served from the store.

    Example: see the module docstring.
    """
    name = check_name(name[:-4] if isinstance(name, str) and name.endswith(".mkb") else name)
    root = os.path.realpath(store)
    flat = os.path.join(root, f"{name}.mkb")
    folder = os.path.join(root, name)
    if os.path.lexists(flat):
        return [ModelEntry(name, FLAT_VERSION, _model_file(root, flat, name), defaults)]
    if not os.path.isdir(folder):
        raise ModelStoreError(f"model {name!r} is not in the model store {store}: expected"
                              f" {name}.mkb or {name}/VERSION/model.mkb")
    _inside(root, folder, name)
    config = _read_config(root, folder, name, defaults)
    versions = sorted((v for v in os.listdir(folder)
                       if _NAME.fullmatch(v) and os.path.lexists(os.path.join(folder, v, "model.mkb"))),
                      key=_version_key)
    if not versions:
        raise ModelStoreError(f"model {name!r} has no versions: expected {name}/VERSION/model.mkb"
                              " in the model store")
    return [ModelEntry(name, v, _model_file(root, os.path.join(folder, v, "model.mkb"), name),
                       config)
            for v in versions]


def _read_config(root: str, folder: str, name: str, defaults: ModelConfig) -> ModelConfig:
    path = os.path.join(folder, "config.json")
    if not os.path.lexists(path):
        return defaults
    try:
        with open(_inside(root, path, name), encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelStoreError(f"{name}/config.json cannot be read: {e}") from None
    if not isinstance(values, dict):
        raise ModelStoreError(f"{name}/config.json must hold a JSON object")
    config = apply_config(defaults, values, f"{name}/config.json")
    if config.handler is not None:
        handler = config.handler
        if not isinstance(handler, str) or os.path.isabs(handler) or ".." in handler.split("/"):
            raise ModelStoreError(f"{name}/config.json: handler {handler!r} must be a file name in"
                                  f" the model's folder")
        config = dataclasses.replace(config, handler=_inside(root, os.path.join(folder, handler), name))
    return config


def _inside(root: str, path: str, name: str) -> str:
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise ModelStoreError(f"model {name!r}: {os.path.relpath(path, root)} leads outside the"
                              f" model store (to {real}); only files inside the store are served")
    return real


def _model_file(root: str, path: str, name: str) -> str:
    real = _inside(root, path, name)
    # NOTE: a FIFO or device would block or never end when read; a folder cannot be mapped.
    if not os.path.isfile(real):
        raise ModelStoreError(f"model {name!r}: {os.path.relpath(path, root)} is not a regular"
                              " file; a model is a .mkb file")
    return real


def _version_key(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
