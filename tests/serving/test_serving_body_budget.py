"""`modelkit serve --max-buffered-mb`: the server-wide budget of buffered request-body bytes,
end to end over real HTTP on loopback. Requests hold their bodies open (a declared
Content-Length with the last bytes not sent yet), so which requests fit is decided by the budget
alone, not by timing.

Oracles: onnxruntime on the same ONNX model; the Prometheus gauge on the management /metrics.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import struct
import time
import urllib.parse

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
ort = pytest.importorskip("onnxruntime")

from serving_models import build_store  # noqa: E402
from server_process import ServerProcess  # noqa: E402

BUDGET = 1 << 20  # --max-buffered-mb 1
BODY_CAP = 2 << 20  # --max-body-mb 2
BODY = 300_000  # three of these fit in the budget, a fourth does not
PATHS = ["/v2/models/mlp/infer", "/predictions/mlp"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    protos = build_store(str(root), str(tmp_path_factory.mktemp("outside")))
    server = ServerProcess(str(root), "--models", "mlp", "--models", "slow",
                           "--max-body-mb", "2", "--max-buffered-mb", "1", "--no-auth")
    oracle = ort.InferenceSession(protos["mlp"].SerializeToString(), providers=["CPUExecutionProvider"])
    try:
        yield server, oracle
    finally:
        server.kill()


def _buffered(server) -> float:
    status, _, text = server.manage("GET", "/metrics")
    assert status == 200
    lines = [l for l in text.decode().splitlines() if l.startswith("modelkit_buffered_body_bytes ")]
    assert len(lines) == 1, text[:2000]
    return float(lines[0].split()[1])


def _wait_buffered(server, expected: float, at_least=False, timeout=10.0) -> None:
    def reached(got):
        return got >= expected if at_least else got == expected

    deadline = time.monotonic() + timeout
    while not reached(got := _buffered(server)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reached(got), got


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, 20)).astype(np.float32)


def _padded_body(path: str, x: np.ndarray, size: int = BODY) -> bytes:
    if path.startswith("/v2"):
        document = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                "data": x.ravel().tolist()}]}
    else:
        document = {"x": x.tolist()}
    body = json.dumps(document).encode()
    return body + b" " * (size - len(body))  # JSON allows trailing whitespace


def _open(server, path: str, headers: str) -> socket.socket:
    parts = urllib.parse.urlsplit(server.inference)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n".encode())
    return sock


def _response(sock) -> tuple[int, dict, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _assert_refused(response, path: str, status: int = 503, words: str = "--max-buffered-mb"):
    got, headers, body = response
    assert got == status, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    if path.startswith("/v2"):
        assert set(error) == {"error"} and words in error["error"]
    else:
        assert set(error) == {"code", "type", "message"} and words in error["message"]
        assert error["code"] == status
        assert error["type"] == ("ServiceUnavailableException" if status == 503
                                 else "RequestEntityTooLargeException")
    if status == 503:
        assert headers["retry-after"] == "1"


@pytest.mark.parametrize("path", PATHS)
def test_declared_length_is_refused_before_the_body_is_sent(env, path):
    server, _ = env
    # Over the whole budget but under the per-request cap: 503; over the cap: 413 as before.
    # No body byte is sent, so an answer proves the server did not wait to read one.
    for declared, status, words in ((BUDGET + 1, 503, "--max-buffered-mb"), (BODY_CAP + 1, 413, "limit")):
        with _open(server, path, f"Content-Length: {declared}\r\n") as sock:
            _assert_refused(_response(sock), path, status, words)
    _wait_buffered(server, 0)


def test_concurrent_bodies_beyond_the_budget_get_503_and_the_rest_the_right_answer(env):
    server, oracle = env
    requests = [(PATHS[i % 2], _x(i)) for i in range(8)]
    bodies = [_padded_body(path, x) for path, x in requests]
    sockets = []
    try:
        for (path, _), body in zip(requests, bodies):
            sock = _open(server, path, f"Content-Length: {len(body)}\r\n")
            sock.sendall(body[:-10])
            sockets.append(sock)
        _wait_buffered(server, 3 * BODY)
        # The five refused requests are answered while the three leased ones wait for their bodies.
        answered, deadline = set(), time.monotonic() + 10
        while len(answered) < 5 and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in sockets if s not in answered], [], [], 0.5)
            answered.update(readable)
        assert len(answered) == 5
        for (path, _), sock in zip(requests, sockets):
            if sock in answered:
                _assert_refused(_response(sock), path)
        for (path, x), body, sock in zip(requests, bodies, sockets):
            if sock not in answered:
                sock.sendall(body[-10:])
                status, _, answer = _response(sock)
                assert status == 200, answer
                answer = json.loads(answer)
                got = answer["outputs"][0]["data"] if path.startswith("/v2") else next(iter(answer.values()))
                expected = oracle.run(None, {"x": x})[0]
                np.testing.assert_allclose(np.asarray(got, np.float32).reshape(expected.shape), expected,
                                           rtol=1e-5, atol=1e-6)
    finally:
        for sock in sockets:
            sock.close()
    _wait_buffered(server, 0)


def test_chunked_bodies_are_counted_as_they_arrive(env):
    server, _ = env
    chunk = b"%x\r\n" % BODY + b" " * BODY + b"\r\n"
    with _open(server, PATHS[0], f"Content-Length: {3 * BODY}\r\n") as holder:
        holder.sendall(b"[")
        _wait_buffered(server, 3 * BODY)
        for path in PATHS:
            with _open(server, path, "Transfer-Encoding: chunked\r\n") as sock:
                sock.sendall(chunk)  # fits under the per-request cap, not in what is left of the budget
                _assert_refused(_response(sock), path)
    _wait_buffered(server, 0)


def test_aborted_and_timed_out_requests_give_their_bytes_back(env):
    server, oracle = env
    storm = []
    for i in range(6):
        path = PATHS[i % 2]
        if i % 3 == 2:
            sock = _open(server, path, "Transfer-Encoding: chunked\r\n")
            sock.sendall(b"%x\r\n" % BODY + b" " * BODY + b"\r\n")
        else:
            sock = _open(server, path, f"Content-Length: {BODY}\r\n")
            sock.sendall(b" " * 1000)
        storm.append(sock)
    _wait_buffered(server, 2 * BODY, at_least=True)
    for sock in storm:  # every client aborts (RST) in the middle of its body
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    _wait_buffered(server, 0)
    # A request that times out (504 after the model's 0.3 s) also gives its bytes back.
    status, _, body = server.infer("POST", "/v2/models/slow/infer", {"inputs": [
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [4000]}]})
    assert status == 504, body
    _wait_buffered(server, 0)
    x = _x(99)
    status, _, body = server.infer("POST", PATHS[0], _padded_body(PATHS[0], x),
                                   {"Content-Type": "application/json"})
    assert status == 200, body
    expected = oracle.run(None, {"x": x})[0]
    got = np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    _wait_buffered(server, 0)
