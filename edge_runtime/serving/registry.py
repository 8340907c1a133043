"""The models being served, by name and version; registration only from the model store.

A model is validated before it is served: its file must load in the server process (which gives
the input/output specs the APIs check requests against) and in every worker. Unregistering takes
the model out of the table first (new requests get 404), then lets its queued and running requests
finish before its workers stop.

Example:
    >>> import asyncio, os, tempfile
    >>> from modelkit.edge_runtime.serving.metrics import ServerMetrics
    >>> from modelkit.edge_runtime.serving.store import ModelConfig
    >>> registry = ModelRegistry(tempfile.mkdtemp(), ModelConfig(), ServerMetrics())
    >>> asyncio.run(registry.register("../secrets"))
    Traceback (most recent call last):
    ...
    modelkit.edge_runtime.serving.errors.BadRequest: model name '../secrets' is not allowed: use letters, digits, '_', '-' and '.' (no '..', no '/'), up to 128 characters
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

from modelkit.edge_runtime.errors import EdgeRuntimeError
from modelkit.edge_runtime.serving.errors import BadRequest, Conflict, ModelStoreError, NotFound
from modelkit.edge_runtime.serving.metrics import ServerMetrics
from modelkit.edge_runtime.serving.pool import ModelRuntime
from modelkit.edge_runtime.serving.store import ModelConfig, ModelEntry, apply_config, find_model
from modelkit.edge_runtime.session import load


@dataclass
class ServedModel:
    """One registered model version."""

    entry: ModelEntry
    runtime: ModelRuntime
    inputs: list
    outputs: list
    batchable: bool
    handler: Optional[ModuleType]


def is_batchable(inputs: list, outputs: list) -> bool:
    """True when every input and output has the same symbolic first dim, so requests can be
    stacked along it and the outputs split back.

    Example:
        >>> from modelkit.edge_runtime.session import TensorSpec
        >>> is_batchable([TensorSpec("x", "float32", ("n", 3))], [TensorSpec("y", "float32", ("n",))])
        True
    """
    specs = inputs + outputs
    if not inputs or any(s.shape is None or not s.shape for s in specs):
        return False
    first = specs[0].shape[0]
    return isinstance(first, str) and all(s.shape[0] == first for s in specs)


class ModelRegistry:
    """Name -> version -> `ServedModel`, for one model store."""

    def __init__(self, store: str, defaults: ModelConfig, metrics: ServerMetrics):
        self.store = store
        self.defaults = defaults
        self.metrics = metrics
        self.models: dict[str, dict[str, ServedModel]] = {}
        self._pending: set[str] = set()

    def get(self, name: str, version: Optional[str] = None) -> ServedModel:
        """The model version (the newest when `version` is None); `NotFound` otherwise."""
        versions = self.models.get(name)
        if versions is None:
            raise NotFound(f"model {name!r} is not registered; registered models:"
                           f" {sorted(self.models)[:20]}"[:400])
        if version is None:
            return versions[list(versions)[-1]]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version!r}; its versions are"
                           f" {list(versions)}"[:400])
        return versions[version]

    @property
    def ready(self) -> bool:
        return all(m.runtime.ready for versions in self.models.values() for m in versions.values())

    async def register(self, name: str, overrides: Optional[dict] = None,
                       workers: Optional[int] = None) -> list[ServedModel]:
        """Load every version of model `name` from the store and start its workers.
        `overrides` are config.json keys that take precedence over the model's config."""
        try:
            entries = find_model(self.store, name, self.defaults)
        except ModelStoreError as e:
            raise BadRequest(str(e)) from None
        name = entries[0].name
        if name in self.models or name in self._pending:
            raise Conflict(f"model {name!r} is already registered; DELETE /models/{name} first")
        self._pending.add(name)
        served: list[ServedModel] = []
        try:
            for entry in entries:
                config = entry.config
                if overrides:
                    config = _checked(lambda: apply_config(config, overrides, "the request"))
                if workers is not None:
                    config = dataclasses.replace(config, workers=workers)
                served.append(await self._start(dataclasses.replace(entry, config=config)))
            self.models[name] = {m.entry.version: m for m in served}
            return served
        except BaseException:
            for model in served:
                await model.runtime.stop()
            raise
        finally:
            self._pending.discard(name)

    async def unregister(self, name: str, version: Optional[str] = None) -> list[str]:
        """Stop serving model `name` (one version, or all); returns the versions removed after
        their in-flight requests finished."""
        model = self.get(name, version)
        versions = self.models[name]
        removed = [model.entry.version] if version is not None else list(versions)
        stopping = [versions.pop(v) for v in removed]
        if not versions:
            del self.models[name]
        await asyncio.gather(*(m.runtime.stop() for m in stopping))
        return removed

    async def stop_all(self) -> None:
        """Unregister every model (each drains its in-flight requests)."""
        await asyncio.gather(*(self.unregister(name) for name in list(self.models)))

    async def _start(self, entry: ModelEntry) -> ServedModel:
        try:
            session = await asyncio.to_thread(load, entry.path)
        except (EdgeRuntimeError, OSError) as e:
            raise BadRequest(f"model {entry.name!r} version {entry.version}: not a servable .mkb"
                             f" file ({type(e).__name__}: {e})"[:600]) from None
        handler = _checked(lambda: _load_handler(entry)) if entry.config.handler else None
        batchable = is_batchable(session.inputs, session.outputs)
        runtime = ModelRuntime(entry, batchable, self.metrics)
        try:
            await runtime.start()
        except ModelStoreError as e:
            await runtime.stop()
            raise BadRequest(str(e)) from None
        return ServedModel(entry, runtime, list(session.inputs), list(session.outputs), batchable, handler)


def _checked(make):
    try:
        return make()
    except ModelStoreError as e:
        raise BadRequest(str(e)) from None


def _load_handler(entry: ModelEntry) -> ModuleType:
    # NOTE: handler.py is the operator's own code from the model store, trusted like the store.
    spec = importlib.util.spec_from_file_location(f"modelkit_handler_{entry.name}", entry.config.handler)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ModelStoreError(f"model {entry.name!r}: {entry.config.handler} failed to load:"
                              f" {type(e).__name__}: {e}") from None
    if not callable(getattr(module, "preprocess", None)):
        raise ModelStoreError(f"model {entry.name!r}: {entry.config.handler} must define"
                              " preprocess(body: bytes, content_type: str) -> dict of arrays")
    return module
