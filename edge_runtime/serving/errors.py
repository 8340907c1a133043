"""Errors the server answers with: each carries its HTTP status and TorchServe's exception type
name; the apps render them in each API's own error format (v2 `{"error": ...}`, TorchServe
`{"code", "type", "message"}`).

Example:
    >>> e = BadRequest("input 'x': expected FP32, got INT64")
    >>> (e.status, e.type_name)
    (400, 'BadRequestException')
"""

from __future__ import annotations

from typing import Optional

from modelkit.edge_runtime.errors import EdgeRuntimeError


class ModelStoreError(EdgeRuntimeError):
    """A model-store name, layout, config.json or handler.py that cannot be served."""


class UnsafeServeOptions(ModelStoreError):
    """`modelkit serve` options refused at start-up because they would expose the server (a
    ModelStoreError, so that the CLI reports it like every other start-up refusal)."""


class ServingError(Exception):
    """An error answered to an HTTP client."""

    status = 500
    type_name = "InternalServerException"

    def __init__(self, message: str, *, retry_after: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadRequest(ServingError):
    status, type_name = 400, "BadRequestException"


class Unauthorized(ServingError):
    status, type_name = 401, "UnauthorizedException"


class NotFound(ServingError):
    status, type_name = 404, "ModelNotFoundException"


class NoSuchEndpoint(ServingError):
    status, type_name = 404, "ResourceNotFoundException"


class MethodNotAllowed(ServingError):
    status, type_name = 405, "MethodNotAllowedException"


class NotAcceptable(ServingError):
    status, type_name = 406, "NotAcceptableException"


class Conflict(ServingError):
    status, type_name = 409, "ConflictStatusException"


class PayloadTooLarge(ServingError):
    status, type_name = 413, "RequestEntityTooLargeException"


class ServiceUnavailable(ServingError):
    status, type_name = 503, "ServiceUnavailableException"


class GatewayTimeout(ServingError):
    status, type_name = 504, "RequestTimeoutException"
