"""The management API (TorchServe's paths) and Prometheus `/metrics`, on their own port.

Every endpoint wants `Authorization: Bearer <token>` unless the server runs with `--no-auth`.
Models are registered by name from the model store only: `POST /models?url=NAME`.

Example:
    >>> from modelkit.edge_runtime.serving.server import ServerState
    >>> app = build_management_app(ServerState.for_doc())
    >>> sorted({r.path for r in app.routes})
    ['/metrics', '/models', '/models/{name}', '/models/{name}/{version}']
"""

from __future__ import annotations

import hmac

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelkit.edge_runtime.serving.errors import BadRequest, ModelStoreError, ServingError, Unauthorized
from modelkit.edge_runtime.serving.registry import ServedModel
from modelkit.edge_runtime.serving.web import (endpoint, http_exception, json_response,
                                               unhandled_exception)

MAX_WORKERS = 64


def build_management_app(state) -> Starlette:
    """The management Starlette app over `state` (a `server.ServerState`).

    Example: see the module docstring.
    """
    api = _ManagementAPI(state)

    def guarded(handler):
        async def checked(request: Request) -> Response:
            api.authorize(request)
            return await handler(request)

        return endpoint(checked, "torchserve")

    routes = [
        Route("/models", guarded(api.list_models), methods=["GET"]),
        Route("/models", guarded(api.register), methods=["POST"]),
        Route("/models/{name}", guarded(api.describe), methods=["GET"]),
        Route("/models/{name}", guarded(api.scale), methods=["PUT"]),
        Route("/models/{name}", guarded(api.unregister), methods=["DELETE"]),
        Route("/models/{name}/{version}", guarded(api.describe), methods=["GET"]),
        Route("/models/{name}/{version}", guarded(api.scale), methods=["PUT"]),
        Route("/models/{name}/{version}", guarded(api.unregister), methods=["DELETE"]),
        Route("/metrics", guarded(api.metrics_text), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_exception,
                                                       Exception: unhandled_exception})
    # NOTE: Starlette answers "/ping/" with a redirect whose Location is built from the client's
    # Host header; an API has one spelling per path, so anything else is a JSON 404.
    app.router.redirect_slashes = False
    return app


class _ManagementAPI:
    def __init__(self, state):
        self.state = state
        self.registry = state.registry

    def authorize(self, request: Request) -> None:
        if self.state.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = self.state.token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), expected):
            raise Unauthorized("the management API needs 'Authorization: Bearer <token>'; the"
                               f" token is in the key file printed at start ({self.state.token_file})")

    async def list_models(self, request: Request) -> Response:
        return json_response({"models": [
            {"modelName": name, "modelUrl": _url(next(iter(versions.values())))}
            for name, versions in sorted(self.registry.models.items())]})

    async def describe(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        if version == "all":
            self.registry.get(name)
            models = list(self.registry.models[name].values())
        else:
            models = [self.registry.get(name, version)]
        return json_response([_description(m) for m in models])

    async def register(self, request: Request) -> Response:
        query = request.query_params
        url = query.get("url")
        if not url:
            raise BadRequest("POST /models needs ?url=NAME, a model name in the model store")
        if "://" in url or url.startswith("/"):
            raise BadRequest(f"url={url!r}: models are registered by name from the model store"
                             " only, never from a URL or an absolute path"[:400])
        overrides = {key: query[key] for key in ("batch_size", "max_batch_delay", "response_timeout")
                     if key in query}
        workers = _int_param(query, "initial_workers", 1, MAX_WORKERS)
        served = await self.registry.register(url, overrides, workers)
        first = served[0]
        return json_response({"status": f"Model \"{first.entry.name}\" version(s)"
                                        f" {[m.entry.version for m in served]} registered with"
                                        f" {len(first.runtime.workers)} worker(s) each"})

    async def scale(self, request: Request) -> Response:
        model = self.registry.get(request.path_params["name"], request.path_params.get("version"))
        workers = _int_param(request.query_params, "min_worker", 1, MAX_WORKERS)
        if workers is None:
            raise BadRequest("PUT /models/{name} needs ?min_worker=N")
        try:
            await model.runtime.scale(workers)
        except ModelStoreError as e:
            raise ServingError(f"model {model.entry.name!r}: starting a worker failed: {e}") from None
        return json_response({"status": f"Model \"{model.entry.name}\" version {model.entry.version}"
                                        f" now runs {workers} worker(s)"})

    async def unregister(self, request: Request) -> Response:
        name = request.path_params["name"]
        removed = await self.registry.unregister(name, request.path_params.get("version"))
        return json_response({"status": f"Model \"{name}\" version(s) {removed} unregistered"})

    async def metrics_text(self, request: Request) -> Response:
        self.state.metrics.buffered_body_bytes.set(self.state.body_budget.used)
        for versions in self.registry.models.values():
            for m in versions.values():
                self.state.metrics.queue_depth.labels(model=m.entry.name, version=m.entry.version).set(
                    m.runtime.queue_depth)
        return Response(self.state.metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")


def _int_param(query, key: str, low: int, high: int):
    if key not in query:
        return None
    value = query[key]
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadRequest(f"{key}={value!r}: expected an integer in [{low}, {high}]"[:200])
    return int(value)


def _url(model: ServedModel) -> str:
    return model.entry.name


def _description(model: ServedModel) -> dict:
    config, runtime = model.entry.config, model.runtime
    return {
        "modelName": model.entry.name, "modelVersion": model.entry.version, "modelUrl": _url(model),
        "runtime": "modelkit", "minWorkers": runtime.target_workers, "maxWorkers": runtime.target_workers,
        "batchSize": config.max_batch_size, "maxBatchDelay": config.max_queue_delay_us / 1000,
        "maxQueueDelayUs": config.max_queue_delay_us, "responseTimeout": config.timeout_s,
        "maxQueueSize": config.max_queue_size, "batchable": model.batchable,
        "queueDepth": runtime.queue_depth, "sessionCalls": runtime.session_calls,
        "workerRestarts": runtime.restarts, "ready": runtime.ready,
        "workers": runtime.describe(),
    }
