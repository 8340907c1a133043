"""What both Starlette apps share: reading a body under a per-request size limit and a
server-wide budget of buffered body bytes, JSON responses, and turning every failure into the
API's own JSON error (never a traceback, never HTML).

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


class BodyBudget:
    """The server-wide budget of request-body bytes held in memory at once: each request takes a
    `lease` for its whole life (reading, decoding, queueing for a batch, running), so the budget
    also covers the decoded inputs waiting in the batcher; the lease gives its bytes back when
    the request ends, however it ends. A request that would go over the budget gets 503 with
    Retry-After instead of being buffered.

    NOTE: both apps run on one asyncio event loop and the counter only changes between awaits,
    so a plain int needs no lock.

    Example:
        >>> budget = BodyBudget(limit=100)
        >>> with budget.lease() as lease:
        ...     lease.cover(60)
        ...     budget.used
        60
        >>> budget.used
        0
        >>> with budget.lease() as a, budget.lease() as b:
        ...     a.cover(60)
        ...     b.cover(60)
        Traceback (most recent call last):
        ...
        modelkit.edge_runtime.serving.errors.ServiceUnavailable: the server already buffers 60 bytes of request bodies; 60 more would exceed its budget of 100 bytes (--max-buffered-mb); retry later
        >>> budget.used
        0
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def lease(self) -> "BodyLease":
        """A new, empty lease on this budget (use it as a context manager)."""
        return BodyLease(self)


class BodyLease:
    """The bytes one request holds of a `BodyBudget`; returned in full on leaving `with`."""

    def __init__(self, budget: BodyBudget):
        self.budget = budget
        self.held = 0

    def cover(self, size: int) -> None:
        """Make this lease hold at least `size` bytes, or raise `ServiceUnavailable` (503)."""
        more = size - self.held
        if more <= 0:
            return
        budget = self.budget
        if budget.used + more > budget.limit:
            raise ServiceUnavailable(
                f"the server already buffers {budget.used} bytes of request bodies; {more} more"
                f" would exceed its budget of {budget.limit} bytes (--max-buffered-mb); retry later",
                retry_after=1)
        budget.used += more
        self.held = size

    def __enter__(self) -> "BodyLease":
        return self

    def __exit__(self, *exc) -> None:
        self.budget.used -= self.held
        self.held = 0


async def read_body(request: Request, limit: int, lease: BodyLease) -> bytes:
    """The request body, refusing more than `limit` bytes (413) or more than `lease`'s budget
    can take (503). A Content-Length is checked and leased before reading any of the body; a
    chunked body is counted and leased as it arrives.

    Example: exercised by the server tests (413 and 503 for declared and chunked bodies).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
        lease.cover(int(declared))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
            lease.cover(size)
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
