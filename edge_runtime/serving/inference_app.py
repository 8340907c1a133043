"""The inference API: TorchServe's `/ping` and `/predictions`, and the KServe Open Inference
Protocol v2 REST endpoints (with model versions, server metadata, a model list and the Triton
model config that perf_analyzer reads).

Example:
    >>> from modelkit.edge_runtime.serving.server import ServerState
    >>> app = build_inference_app(ServerState.for_doc())
    >>> sorted(r.path for r in app.routes)[:3]
    ['/ping', '/predictions/{name}', '/predictions/{name}/{version}']
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelkit.edge_runtime.serving.codecs import (batch_key, check_feeds, dumps, npy_bytes,
                                                  parse_json, torchserve_feeds, v2_feeds, v2_response)
from modelkit.edge_runtime.serving.datatypes import NUMPY_TO_V2, TRITON_CONFIG_TYPES
from modelkit.edge_runtime.serving.errors import BadRequest, NotAcceptable, ServingError
from modelkit.edge_runtime.serving.registry import ServedModel
from modelkit.edge_runtime.serving.web import (BodyLease, endpoint, error_response, http_exception,
                                               internal_error, json_response, read_body,
                                               unhandled_exception)

PLATFORM = "modelkit_mkb"


def build_inference_app(state) -> Starlette:
    """The inference Starlette app over `state` (a `server.ServerState`).

    Example: see the module docstring.
    """
    api = _InferenceAPI(state)
    routes = [
        Route("/ping", endpoint(api.ping, "torchserve"), methods=["GET"]),
        Route("/predictions/{name}", api.counted(api.predict, "torchserve"), methods=["POST"]),
        Route("/predictions/{name}/{version}", api.counted(api.predict, "torchserve"), methods=["POST"]),
        Route("/v2", endpoint(api.server_metadata, "v2"), methods=["GET"]),
        Route("/v2/health/live", endpoint(api.live, "v2"), methods=["GET"]),
        Route("/v2/health/ready", endpoint(api.server_ready, "v2"), methods=["GET"]),
        Route("/v2/models", endpoint(api.model_list, "v2"), methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, endpoint(api.model_metadata, "v2"), methods=["GET"]),
            Route(prefix + "/ready", endpoint(api.model_ready, "v2"), methods=["GET"]),
            Route(prefix + "/config", endpoint(api.model_config, "v2"), methods=["GET"]),
            Route(prefix + "/infer", api.counted(api.infer, "v2"), methods=["POST"]),
        ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_exception,
                                                       Exception: unhandled_exception})
    # NOTE: Starlette answers "/ping/" with a redirect whose Location is built from the client's
    # Host header; an API has one spelling per path, so anything else is a JSON 404.
    app.router.redirect_slashes = False
    return app


class _InferenceAPI:
    def __init__(self, state):
        self.state = state
        self.registry = state.registry
        self.metrics = state.metrics

    def counted(self, handler, style: str):
        """`endpoint` plus the request counter and latency histogram, labelled by model (only
        registered names become labels, so clients cannot grow the metrics without bound), and
        a lease on the server's body budget that `handler(request, lease)` holds until it
        returns or fails."""
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                with self.state.body_budget.lease() as lease:
                    response = await handler(request, lease)
            except ServingError as e:
                response = error_response(e, style)
            except Exception:
                response = internal_error(style)
            name = request.path_params.get("name", "")
            label = name if name in self.registry.models else "_unknown"
            self.metrics.requests.labels(model=label, api=style, status=str(response.status_code)).inc()
            self.metrics.latency.labels(model=label).observe(time.perf_counter() - started)
            return response

        return wrapped

    def _model(self, request: Request) -> ServedModel:
        return self.registry.get(request.path_params["name"], request.path_params.get("version"))

    async def _run(self, model: ServedModel, feeds: dict) -> dict:
        check_feeds(feeds, model.inputs)
        feeds = {s.name: feeds[s.name] for s in model.inputs}
        rows = len(next(iter(feeds.values()))) if model.batchable else 1
        return await model.runtime.infer(feeds, rows, batch_key(feeds) if model.batchable else ())

    # --- TorchServe ---------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        healthy = self.registry.ready
        return json_response({"status": "Healthy" if healthy else "Unhealthy"}, 200 if healthy else 500)

    async def predict(self, request: Request, lease: BodyLease) -> Response:
        model = self._model(request)
        body = await read_body(request, self.state.max_body_bytes, lease)
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if model.handler is not None:
            feeds = await _call_handler(model.handler.preprocess, body, content_type)
            if not isinstance(feeds, dict):
                raise BadRequest(f"handler.preprocess returned {type(feeds).__name__}, not a dict of arrays")
            feeds = {str(k): np.asarray(v) for k, v in feeds.items()}
        else:
            feeds = await _decode(torchserve_feeds, body, content_type, model.inputs)
        outputs = await self._run(model, feeds)
        postprocess = getattr(model.handler, "postprocess", None)
        if postprocess is not None:
            result = await _call_handler(postprocess, outputs)
            if isinstance(result, (bytes, bytearray)):
                return Response(bytes(result), media_type="application/octet-stream")
            return Response(dumps(result), media_type="application/json")
        if "application/x-npy" in request.headers.get("accept", ""):
            if len(outputs) != 1:
                raise NotAcceptable(f"application/x-npy answers hold one array; this model has"
                                    f" outputs {list(outputs)}: ask for application/json")
            return Response(npy_bytes(next(iter(outputs.values()))), media_type="application/x-npy")
        return Response(dumps({n: a.tolist() for n, a in outputs.items()}), media_type="application/json")

    # --- KServe v2 ----------------------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return json_response({"name": "modelkit", "version": self.state.version, "extensions": []})

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def server_ready(self, request: Request) -> Response:
        ready = self.registry.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    async def model_list(self, request: Request) -> Response:
        return json_response({"models": [
            {"name": name, "versions": list(versions), "platform": PLATFORM,
             "ready": all(m.runtime.ready for m in versions.values())}
            for name, versions in sorted(self.registry.models.items())]})

    async def model_metadata(self, request: Request) -> Response:
        model = self._model(request)
        return json_response({
            "name": model.entry.name,
            "versions": list(self.registry.models[model.entry.name]),
            "platform": PLATFORM,
            "inputs": [_tensor_metadata(s) for s in model.inputs],
            "outputs": [_tensor_metadata(s) for s in model.outputs],
        })

    async def model_ready(self, request: Request) -> Response:
        model = self._model(request)
        ready = model.runtime.ready
        return json_response({"name": model.entry.name, "ready": ready}, 200 if ready else 503)

    async def model_config(self, request: Request) -> Response:
        model = self._model(request)
        config = model.entry.config
        # Triton's convention: with max_batch_size > 0 the dims leave out the batch dim.
        skip = 1 if model.batchable else 0

        def tensors(specs):
            return [{"name": s.name, "data_type": TRITON_CONFIG_TYPES[NUMPY_TO_V2[s.dtype]],
                     "dims": [d if isinstance(d, int) else -1 for d in (s.shape or ())[skip:]]}
                    for s in specs if s.dtype in NUMPY_TO_V2]

        document = {"name": model.entry.name, "platform": PLATFORM, "backend": "modelkit",
                    "max_batch_size": config.max_batch_size if model.batchable else 0,
                    "input": tensors(model.inputs), "output": tensors(model.outputs),
                    "instance_group": [{"count": len(model.runtime.workers), "kind": "KIND_CPU"}]}
        if model.batchable and config.max_batch_size > 1:
            document["dynamic_batching"] = {"max_queue_delay_microseconds": config.max_queue_delay_us}
        return json_response(document)

    async def infer(self, request: Request, lease: BodyLease) -> Response:
        model = self._model(request)
        body = await read_body(request, self.state.max_body_bytes, lease)
        document = await _decode(parse_json, body)
        feeds, wanted = await _decode(v2_feeds, document, model.inputs, model.outputs, size=len(body))
        outputs = await self._run(model, feeds)
        names = wanted if wanted is not None else [s.name for s in model.outputs]
        return json_response(v2_response(model.entry.name, model.entry.version,
                                         document.get("id"), outputs, names))


# Bodies above this are decoded on a thread, so that one large request does not stall the
# event loop (and every other client) while its JSON is parsed and converted.
_DECODE_ON_THREAD_BYTES = 256 * 1024


async def _decode(function, body, *args, size=None):
    if (size if size is not None else len(body)) < _DECODE_ON_THREAD_BYTES:
        return function(body, *args)
    return await asyncio.to_thread(function, body, *args)


def _tensor_metadata(spec) -> dict:
    return {"name": spec.name, "datatype": NUMPY_TO_V2.get(spec.dtype, spec.dtype.upper()),
            "shape": [d if isinstance(d, int) else -1 for d in (spec.shape or ())]}


async def _call_handler(function, *args):
    try:
        return await asyncio.to_thread(function, *args)
    except ServingError:
        raise
    except Exception as e:
        raise BadRequest(f"the model's handler.{function.__name__} failed: {type(e).__name__}: {e}"[:600]) from None
