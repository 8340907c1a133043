"""`modelkit serve`: both APIs on two ports in one asyncio event loop (two uvicorn servers),
the models' worker processes behind them, and a graceful stop on SIGTERM/SIGINT.

At start the server prints one JSON line on stdout once both ports accept connections:
`{"event": "ready", "inference": "http://HOST:PORT", "management": "http://HOST:PORT",
"token_file": PATH or null, "models": [...]}` (ports given as 0 are the ones the OS chose).

Example:
    >>> options = ServeOptions(model_store=".", port=0, management_port=0)
    >>> options.management_host
    '127.0.0.1'
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Optional

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from modelkit.edge_runtime.serving.codecs import dumps
from modelkit.edge_runtime.serving.errors import ModelStoreError, ServingError, UnsafeServeOptions
from modelkit.edge_runtime.serving.inference_app import build_inference_app
from modelkit.edge_runtime.serving.management_app import build_management_app
from modelkit.edge_runtime.serving.metrics import ServerMetrics
from modelkit.edge_runtime.serving.registry import ModelRegistry
from modelkit.edge_runtime.serving.store import ModelConfig, check_name, list_names
from modelkit.edge_runtime.serving.web import BodyBudget, ConcurrencyLimit

log = logging.getLogger("modelkit.serve")

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_BUFFERED_BYTES = 256 * 1024 * 1024
GRACEFUL_TIMEOUT_S = 30


@dataclass
class ServeOptions:
    """Everything `modelkit serve` takes on its command line."""

    model_store: str
    models: Optional[list] = None
    host: str = "127.0.0.1"
    port: int = 8080
    management_host: str = "127.0.0.1"
    management_port: int = 8081
    token_file: Optional[str] = None
    auth: bool = True
    defaults: ModelConfig = field(default_factory=ModelConfig)
    max_body_bytes: int = MAX_BODY_BYTES
    max_buffered_bytes: int = MAX_BUFFERED_BYTES  # request bodies held at once, server-wide
    max_requests: int = 1000  # per port, in the app at once (then JSON 503)


@dataclass
class ServerState:
    """What the two apps share."""

    registry: ModelRegistry
    metrics: ServerMetrics
    max_body_bytes: int
    body_budget: BodyBudget
    token: Optional[str]
    token_file: Optional[str]
    version: str

    @classmethod
    def for_doc(cls) -> "ServerState":
        """A state over an empty store (for docstrings)."""
        metrics = ServerMetrics()
        return cls(ModelRegistry(tempfile.gettempdir(), ModelConfig(), metrics), metrics,
                   MAX_BODY_BYTES, BodyBudget(MAX_BUFFERED_BYTES), None, None, _version())


class _Server(uvicorn.Server):
    # NOTE: two servers share one loop, so signals are handled once, by `serve`, not by each.
    def capture_signals(self):
        return contextlib.nullcontext()


class _JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, but a request that is not valid HTTP (a bad request line,
    header or chunk, an oversized header) gets the same JSON error as everything else, not
    uvicorn's text/plain one. The document carries both APIs' error fields, since at this level
    the request's API is unknown."""

    def send_400_response(self, msg: str) -> None:
        body = dumps({"code": 400, "type": "BadRequestException", "message": msg, "error": msg})
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def write_token_file(path: Optional[str]) -> tuple[str, str]:
    """A fresh token, written to `path` (or a new private temp file) with mode 0600; returns
    (token, path).

    Example:
        >>> token, path = write_token_file(None)
        >>> oct(os.stat(path).st_mode & 0o777), open(path).read() == token
        ('0o600', True)
    """
    token = secrets.token_urlsafe(32)
    if path is None:
        fd, path = tempfile.mkstemp(prefix="modelkit-serve-", suffix=".token")
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(token)
    return token, os.path.abspath(path)


def _version() -> str:
    try:
        return package_version("modelkit")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # NOTE: proto must say TCP: asyncio only turns Nagle off (TCP_NODELAY) on sockets whose proto
    # is IPPROTO_TCP, and with Nagle on, keep-alive responses wait ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(options: ServeOptions) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code.

    Example: `modelkit serve --model-store DIR` calls `asyncio.run(serve(options))`.
    """
    if not os.path.isdir(options.model_store):
        raise ModelStoreError(f"--model-store {options.model_store}: not a directory")
    if not options.auth and not is_loopback(options.management_host):
        raise UnsafeServeOptions(
            f"--no-auth with --management-host {options.management_host}: anyone who can reach "
            "that address could register and unregister models; keep the management API on "
            "loopback (127.0.0.1) or keep its token")
    names = options.models if options.models else list_names(options.model_store)
    for name in names:
        check_name(name[:-4] if name.endswith(".mkb") else name)
    metrics = ServerMetrics()
    registry = ModelRegistry(options.model_store, options.defaults, metrics)
    sockets, token_file = [], None
    try:
        sockets.append(_bind(options.host, options.port))
        sockets.append(_bind(options.management_host, options.management_port))
        token, token_file = write_token_file(options.token_file) if options.auth else (None, None)
        state = ServerState(registry, metrics, options.max_body_bytes,
                            BodyBudget(options.max_buffered_bytes), token, token_file, _version())
        results = await asyncio.gather(*(registry.register(n) for n in names), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await registry.stop_all()
            if not isinstance(errors[0], ServingError):
                raise errors[0]
            raise ModelStoreError(errors[0].message)
        return await _run_servers(options, state, sockets)
    finally:
        for sock in sockets:
            sock.close()
        if token_file is not None and options.token_file is None:
            os.unlink(token_file)  # a temp file of ours; the token dies with the server


async def _run_servers(options: ServeOptions, state: ServerState, sockets: list) -> int:
    apps = [ConcurrencyLimit(build_inference_app(state), options.max_requests),
            ConcurrencyLimit(build_management_app(state), options.max_requests)]
    servers = [_Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                      http=_JsonErrorsH11Protocol,
                                      timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
                                      server_header=False))
               for app in apps]
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in zip(servers, sockets)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)
            return 1
        await asyncio.sleep(0.01)
    print(json.dumps({"event": "ready", "inference": _url(sockets[0]), "management": _url(sockets[1]),
                      "token_file": state.token_file, "models": sorted(state.registry.models)}),
          flush=True)
    log.warning("serving %s: inference %s, management %s%s", sorted(state.registry.models),
                _url(sockets[0]), _url(sockets[1]),
                f", management token in {state.token_file}" if state.token_file else " (no auth)")
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    log.warning("shutting down: finishing in-flight requests")
    for server in servers:
        server.should_exit = True
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal stops at once
        loop.add_signal_handler(sig, _force_exit, servers)
    await asyncio.gather(*tasks, return_exceptions=True)
    waiter.cancel()
    await state.registry.stop_all()
    log.warning("stopped")
    return 0


def _force_exit(servers: list) -> None:
    for server in servers:
        server.force_exit = True


def run(options: ServeOptions) -> int:
    """Blocking entry point for the CLI: configure logging, serve, return the exit code.

    Example: see `serve`.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(options))
