"""What both Starlette apps share: reading a body under a size limit, JSON responses, and
turning every failure into the API's own JSON error (never a traceback, never HTML).

Example:
    >>> error_response(BadRequest("no"), "v2").body
    b'{"error":"no"}'
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from modelkit.edge_runtime.serving.codecs import dumps
from modelkit.edge_runtime.serving.errors import (BadRequest, MethodNotAllowed, NoSuchEndpoint,
                                                  PayloadTooLarge, ServiceUnavailable, ServingError)

log = logging.getLogger("modelkit.serve")


def json_response(document, status: int = 200, headers: dict | None = None) -> Response:
    """A JSON response (NaN-tolerant, see `codecs.dumps`).

    Example:
        >>> json_response({"live": True}).body
        b'{"live":true}'
    """
    return Response(dumps(document), status, headers, media_type="application/json")


def error_response(error: ServingError, style: str) -> Response:
    """`error` as v2's `{"error": ...}` (style "v2") or TorchServe's
    `{"code", "type", "message"}` (style "torchserve"), with Retry-After where it has one.

    Example: see the module docstring.
    """
    if style == "v2":
        document = {"error": error.message}
    else:
        document = {"code": error.status, "type": error.type_name, "message": error.message}
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return json_response(document, error.status, headers)


def internal_error(style: str) -> Response:
    """The answer to a bug in the server: logged with its traceback here, a plain message there.

    Example:
        >>> internal_error("v2").status_code
        500
    """
    log.exception("internal error while answering a request")
    return error_response(ServingError("internal server error; the server log has the details"), style)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes while reading (a Content-Length is
    checked first, but a chunked body is counted as it arrives).

    Example: exercised by the server tests (413 for declared and chunked oversize bodies).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def style_of(path: str) -> str:
    """Which error format a path's API uses.

    Example:
        >>> style_of("/v2/models/x/infer"), style_of("/predictions/x")
        ('v2', 'torchserve')
    """
    return "v2" if path == "/v2" or path.startswith("/v2/") else "torchserve"


def endpoint(handler, style: str | None = None):
    """Wrap an async `handler(request) -> Response` so that every error becomes a JSON error.

    Example:
        >>> callable(endpoint(lambda request: None))
        True
    """
    async def wrapped(request: Request) -> Response:
        chosen = style or style_of(request.url.path)
        try:
            return await handler(request)
        except ServingError as e:
            return error_response(e, chosen)
        except Exception:
            return internal_error(chosen)

    return wrapped


async def http_exception(request: Request, exc) -> Response:
    """Starlette's own 404/405 (unknown path or method) in the API's error format."""
    where = f"{request.method} {request.url.path}"[:300]
    status = getattr(exc, "status_code", 400)
    if status == 404:
        error = NoSuchEndpoint(f"no such endpoint: {where}")
    elif status == 405:
        error = MethodNotAllowed(f"method not allowed: {where}")
    else:
        error = BadRequest(f"{getattr(exc, 'detail', 'bad request')} ({where})")
    return error_response(error, style_of(request.url.path))


async def unhandled_exception(request: Request, exc) -> Response:
    """Any exception that escaped a handler (a bug): JSON 500, traceback only in the log."""
    return internal_error(style_of(request.url.path))


class ConcurrencyLimit:
    """ASGI middleware: at most `limit` HTTP requests in the app at once; the rest get a JSON 503
    with Retry-After at once (uvicorn's own limit answers in plain text).

    Example:
        >>> ConcurrencyLimit(app=None, limit=2).active
        0
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            error = ServiceUnavailable(f"the server is handling {self.active} requests (its limit);"
                                       " retry later", retry_after=1)
            return await error_response(error, style_of(scope["path"]))(scope, receive, send)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
