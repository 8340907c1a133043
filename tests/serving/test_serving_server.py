"""`modelkit serve` end to end: one real server subprocess on ephemeral loopback ports for the
module, real HTTP (http.client), both APIs, management, batching, limits, worker restarts; a
second, short-lived server for graceful shutdown.

Oracles: onnxruntime on the same ONNX model, numpy written here, and the v2 protocol's own example.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
ort = pytest.importorskip("onnxruntime")

from serving_models import build_store  # noqa: E402
from server_process import ServerProcess, pid_alive  # noqa: E402

SERVED = ["mlp", "mlp_batched", "mymodel", "slow", "busy", "texty"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    outside = tmp_path_factory.mktemp("outside")
    protos = build_store(str(root), str(outside))
    args = [a for name in SERVED for a in ("--models", name)]
    server = ServerProcess(str(root), *args, token_file=str(root.parent / "token"))
    oracles = {name: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
               for name, p in protos.items()}
    try:
        yield server, oracles, root
    finally:
        server.kill()


def _json(response):
    status, headers, body = response
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    return status, json.loads(body)


def _mlp_input(rows, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, 20)).astype(np.float32)


def _v2_request(x, request_id=None):
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    if request_id is not None:
        body["id"] = request_id
    return body


# --- health, metadata ------------------------------------------------------------------------

def test_health_and_server_metadata(env):
    server, _, _ = env
    assert _json(server.infer("GET", "/ping")) == (200, {"status": "Healthy"})
    assert _json(server.infer("GET", "/v2/health/live")) == (200, {"live": True})
    assert _json(server.infer("GET", "/v2/health/ready")) == (200, {"ready": True})
    status, meta = _json(server.infer("GET", "/v2"))
    assert status == 200 and meta["name"] == "modelkit" and meta["extensions"] == []
    status, listing = _json(server.infer("GET", "/v2/models"))
    assert status == 200 and sorted(m["name"] for m in listing["models"]) == sorted(SERVED)


def test_v2_model_metadata_readiness_and_triton_config(env):
    server, _, _ = env
    status, meta = _json(server.infer("GET", "/v2/models/mlp"))
    assert status == 200
    assert meta == {"name": "mlp", "versions": ["1"], "platform": "modelkit_mkb",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 20]}],
                    "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 5]}]}
    status, meta = _json(server.infer("GET", "/v2/models/busy/versions/1"))
    assert status == 200 and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "n", "datatype": "INT64", "shape": [1]}]
    assert _json(server.infer("GET", "/v2/models/mlp/ready")) == (200, {"name": "mlp", "ready": True})
    assert _json(server.infer("GET", "/v2/models/busy/versions/2/ready"))[1]["ready"] is True
    status, config = _json(server.infer("GET", "/v2/models/mlp_batched/config"))
    assert status == 200 and config["max_batch_size"] == 64
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [20]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 300000}
    status, config = _json(server.infer("GET", "/v2/models/mymodel/config"))
    assert config["max_batch_size"] == 0 and config["input"][0]["dims"] == [2, 2]


# --- inference -----------------------------------------------------------------------------------

SPEC_EXAMPLE = {  # verbatim from the Open Inference Protocol's "Inference Request Examples"
    "id": "42",
    "inputs": [{"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
               {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]}],
    "outputs": [{"name": "output0"}],
}


def test_v2_protocol_example_request(env):
    server, oracles, _ = env
    # The example declares shape [3] for input1 but sends one element: a strict server refuses it.
    status, error = _json(server.infer("POST", "/v2/models/mymodel/infer", SPEC_EXAMPLE))
    assert status == 400 and set(error) == {"error"}
    assert "input1" in error["error"] and "3 elements" in error["error"] and "holds 1" in error["error"]
    fixed = json.loads(json.dumps(SPEC_EXAMPLE))
    fixed["inputs"][1]["data"] = [True, False, True]
    status, answer = _json(server.infer("POST", "/v2/models/mymodel/infer", fixed))
    assert status == 200
    expected = oracles["mymodel"].run(["output0"], {"input0": np.array([[1, 2], [3, 4]], np.uint32),
                                                    "input1": np.array([True, False, True])})[0]
    assert answer == {"model_name": "mymodel", "model_version": "1", "id": "42",
                      "outputs": [{"name": "output0", "shape": [3, 2], "datatype": "FP32",
                                   "data": expected.ravel().tolist()}]}
    # Nested data and both outputs (no `outputs` selection), BOOL out.
    fixed.pop("outputs")
    fixed["inputs"][0]["data"] = [[1, 2], [3, 4]]
    status, answer = _json(server.infer("POST", "/v2/models/mymodel/infer", fixed))
    assert status == 200 and [o["name"] for o in answer["outputs"]] == ["output0", "output1"]
    assert answer["outputs"][1] == {"name": "output1", "shape": [3], "datatype": "BOOL",
                                    "data": [False, True, False]}


def test_v2_infer_matches_onnxruntime_and_versions(env):
    server, oracles, _ = env
    x = _mlp_input(3)
    expected = oracles["mlp"].run(None, {"x": x})[0]
    status, answer = _json(server.infer("POST", "/v2/models/mlp/infer", _v2_request(x, "r-1")))
    assert status == 200 and answer["id"] == "r-1" and answer["outputs"][0]["shape"] == [3, 5]
    np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(3, 5), expected,
                               rtol=1e-5, atol=1e-6)
    for path in ("/v2/models/busy/versions/1/infer", "/v2/models/busy/infer"):
        status, answer = _json(server.infer("POST", path, {"inputs": [
            {"name": "n", "shape": [1], "datatype": "INT64", "data": [7]}]}))
        assert status == 200 and answer["outputs"][0]["data"] == [343.0]
        assert answer["model_version"] == ("1" if "versions" in path else "2")


def test_torchserve_predictions_json_npy_and_version(env):
    server, oracles, _ = env
    x = _mlp_input(2, seed=1)
    expected = oracles["mlp"].run(None, {"x": x})[0]
    for body in ({"x": x.tolist()}, x.tolist()):
        status, answer = _json(server.infer("POST", "/predictions/mlp", body))
        assert status == 200
        np.testing.assert_allclose(np.array(answer["probs"]), expected, rtol=1e-5, atol=1e-6)
    npy = io.BytesIO()
    np.save(npy, x)
    status, headers, body = server.infer("POST", "/predictions/mlp/1", npy.getvalue(),
                                         {"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
    assert status == 200 and headers["content-type"] == "application/x-npy"
    got = np.load(io.BytesIO(body), allow_pickle=False)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_handler_preprocess_and_postprocess(env):
    server, oracles, _ = env
    x = _mlp_input(1, seed=2)
    status, answer = _json(server.infer("POST", "/predictions/texty", ",".join(map(str, x[0].tolist())).encode(),
                                        {"Content-Type": "text/plain"}))
    assert status == 200
    assert answer == {"label": int(oracles["mlp"].run(None, {"x": x})[0].argmax()), "content": "text"}
    status, error = _json(server.infer("POST", "/predictions/texty", b"not,numbers",
                                       {"Content-Type": "text/plain"}))
    assert status == 400 and "handler.preprocess failed: ValueError" in error["message"]


# --- bad input ---------------------------------------------------------------------------------

def _v2(data=None, **tensor):
    base = {"name": "x", "shape": [1, 20], "datatype": "FP32", "data": data if data is not None else [0.5] * 20}
    return {"inputs": [{**base, **tensor}]}


BAD_REQUESTS = [
    # (id, method, path, body, content type, status, words in the message)
    ("malformed-json", "POST", "/v2/models/mlp/infer", b'{"inputs": [', None, 400, "not valid JSON"),
    ("not-an-object", "POST", "/v2/models/mlp/infer", [1, 2], None, 400, "JSON object"),
    ("no-inputs", "POST", "/v2/models/mlp/infer", {"id": "1"}, None, 400, "'inputs'"),
    ("id-not-string", "POST", "/v2/models/mlp/infer", {**_v2(), "id": 5}, None, 400, "'id' must be a string"),
    ("unknown-input", "POST", "/v2/models/mlp/infer", _v2(name="y"), None, 400, "unknown input 'y'"),
    ("missing-field", "POST", "/v2/models/mlp/infer", {"inputs": [{"name": "x"}]}, None, 400, "lacks"),
    ("wrong-datatype", "POST", "/v2/models/mlp/infer", _v2(datatype="INT64", data=[1] * 20), None, 400, "expects datatype FP32"),
    ("unknown-datatype", "POST", "/v2/models/mlp/infer", _v2(datatype="FP128"), None, 400, "expects datatype FP32"),
    ("shape-data-mismatch", "POST", "/v2/models/mlp/infer", _v2(shape=[2, 20]), None, 400, "needs 40 elements"),
    ("wrong-static-dim", "POST", "/v2/models/mlp/infer", _v2(shape=[2, 10]), None, 400, "dim 1 must be 20"),
    ("wrong-rank", "POST", "/v2/models/mlp/infer", _v2(shape=[20]), None, 400, "expected rank 2"),
    ("negative-dim", "POST", "/v2/models/mlp/infer", _v2(shape=[-1, 20]), None, 400, "non-negative"),
    ("huge-shape", "POST", "/v2/models/mlp/infer", _v2(shape=[10**12, 20]), None, 400, "elements"),
    ("strings-for-floats", "POST", "/v2/models/mlp/infer", _v2(data=["a"] * 20), None, 400, "got strings"),
    ("ragged", "POST", "/v2/models/mlp/infer", _v2(data=[[1.0] * 20, [1.0]]), None, 400, "rectangular"),
    ("nulls", "POST", "/v2/models/mlp/infer", _v2(data=[None] * 20), None, 400, "expected float32"),
    ("floats-for-ints", "POST", "/v2/models/busy/infer",
     {"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [1.5]}]}, None, 400, "expected int64"),
    ("int-out-of-range", "POST", "/v2/models/mymodel/infer",
     {"inputs": [{"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [-1, 2, 3, 4]},
                 {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True] * 3}]}, None, 400, "must lie in"),
    ("numbers-for-bools", "POST", "/v2/models/mymodel/infer",
     {"inputs": [{"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
                 {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [1, 0, 1]}]}, None, 400, "expected bool"),
    ("missing-input", "POST", "/v2/models/mymodel/infer",
     {"inputs": [{"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]}]}, None, 400, "missing input(s) ['input1']"),
    ("duplicate-input", "POST", "/v2/models/mlp/infer", {"inputs": _v2()["inputs"] * 2}, None, 400, "given twice"),
    ("unknown-output", "POST", "/v2/models/mlp/infer", {**_v2(), "outputs": [{"name": "nope"}]}, None, 400, "unknown output 'nope'"),
    ("binary-extension", "POST", "/v2/models/mlp/infer",
     {"inputs": [{**_v2()["inputs"][0], "parameters": {"binary_data_size": 80}}]}, None, 400, "binary tensor"),
    ("nesting-bomb", "POST", "/v2/models/mlp/infer", b'{"inputs": ' + b"[" * 100000 + b"]" * 100000 + b"}", None, 400, "not valid JSON"),
    ("deep-data", "POST", "/v2/models/mlp/infer", _v2(data=json.loads("[" * 60 + "1" + "]" * 60)), None, 400, ""),
    ("unknown-model", "POST", "/v2/models/nope/infer", _v2(), None, 404, "not registered"),
    ("unknown-version", "POST", "/v2/models/mlp/versions/9/infer", _v2(), None, 404, "no version '9'"),
    ("unknown-path", "GET", "/v2/nothing/here", None, None, 404, "no such endpoint"),
    ("wrong-method", "GET", "/v2/models/mlp/infer", None, None, 405, "method not allowed: GET"),
    ("ts-unknown-path", "GET", "/predictions", None, None, 404, "no such endpoint"),
    ("ts-wrong-method", "DELETE", "/ping", None, None, 405, "method not allowed"),
    ("ts-malformed-json", "POST", "/predictions/mlp", b"{", None, 400, "not valid JSON"),
    ("ts-unknown-input", "POST", "/predictions/mlp", {"y": [[1.0] * 20]}, None, 400, "unknown input(s) ['y']"),
    ("ts-wrong-shape", "POST", "/predictions/mlp", {"x": [[1.0] * 3]}, None, 400, "dim 1 must be 20"),
    ("ts-unknown-model", "POST", "/predictions/nope", {"x": []}, None, 404, "not registered"),
    ("ts-unknown-version", "POST", "/predictions/mlp/7", {"x": []}, None, 404, "no version '7'"),
    ("npy-garbage", "POST", "/predictions/mlp", b"\x93NUMPY garbage", "application/x-npy", 400, "not a valid .npy"),
    ("npy-lying-header", "POST", "/predictions/mlp",
     b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 20), }".ljust(128, b" ")[:127] + b"\n" + b"\0" * 80,
     "application/x-npy", 400, "declares shape"),
    ("npy-object", "POST", "/predictions/mlp",
     b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(127, b" ") + b"\n" + b"\0" * 8,
     "application/x-npy", 400, "not accepted"),
    ("npy-wrong-dtype", "POST", "/predictions/mlp", None, "application/x-npy", 400, "expected dtype float32, got float64"),
    ("npy-multi-input", "POST", "/predictions/mymodel", b"\x93NUMPY", "application/x-npy", 400, "single-input"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_json_errors(env, case):
    server, _, _ = env
    _, method, path, body, content_type, status, words = case
    if body is None and method == "POST":
        npy = io.BytesIO()
        np.save(npy, np.zeros((1, 20)))
        body = npy.getvalue()
    headers = {"Content-Type": content_type} if content_type else None
    got, error = _json(server.infer(method, path, body, headers))
    assert got == status
    if path.startswith("/v2"):
        assert set(error) == {"error"} and words in error["error"]
    else:
        assert error["code"] == status and error["type"].endswith("Exception") and words in error["message"]
    assert "Traceback" not in json.dumps(error)


def test_body_limit_declared_and_chunked(env):
    server, _, _ = env
    parts = urllib.parse.urlsplit(server.inference)
    too_big = 33 * 1024 * 1024
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {too_big}\r\n\r\n".encode())
        assert _read_status(s) == 413
    # Chunked: no Content-Length to trust; the server counts while reading.
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
        try:
            for _ in range(40):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        assert _read_status(s) == 413
    assert _json(server.infer("GET", "/v2/health/live"))[0] == 200


def _read_status(sock) -> int:
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return int(data.split(b" ")[1])


def test_request_timeout_gives_504_and_server_goes_on(env):
    server, _, _ = env
    status, error = _json(server.infer("POST", "/v2/models/slow/infer", {"inputs": [
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [4000]}]}))
    assert status == 504 and "0.3 s" in error["error"]
    # The abandoned job's worker is replaced rather than left computing for nobody.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = server.describe("slow")
        if described["workerRestarts"] == 1 and described["ready"]:
            break
        time.sleep(0.05)
    assert described["workerRestarts"] == 1 and described["ready"]
    status, answer = _json(server.infer("POST", "/v2/models/slow/infer", {"inputs": [
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [10]}]}))
    assert status == 200 and answer["outputs"][0]["data"] == [1000.0]


def test_full_queue_gives_503_with_retry_after(env):
    server, _, _ = env
    body = {"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [3000]}]}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: server.infer("POST", "/v2/models/busy/infer", body), range(8)))
    statuses = sorted(r[0] for r in responses)
    assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
    busy = [r for r in responses if r[0] == 503][0]
    assert busy[1]["retry-after"] == "1" and "max_queue_size" in json.loads(busy[2])["error"]


# --- batching ------------------------------------------------------------------------------

def test_dynamic_batching_runs_fewer_calls_and_returns_each_clients_rows(env):
    server, oracles, _ = env
    before = server.describe("mlp_batched")["sessionCalls"]
    inputs = [_mlp_input(1 + i % 3, seed=100 + i) for i in range(32)]
    barrier = threading.Barrier(32, timeout=30)

    def call(x):
        barrier.wait()
        return _json(server.infer("POST", "/v2/models/mlp_batched/infer", _v2_request(x)))

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, inputs))
    calls = server.describe("mlp_batched")["sessionCalls"] - before
    assert 1 <= calls < 32, calls
    for x, (status, answer) in zip(inputs, answers):
        assert status == 200
        got = np.array(answer["outputs"][0]["data"], np.float32).reshape(answer["outputs"][0]["shape"])
        np.testing.assert_allclose(got, oracles["mlp"].run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
    status, _, text = server.manage("GET", "/metrics")
    assert status == 200 and b'modelkit_batch_size_bucket{le="1.0",model="mlp_batched",version="1"}' in text


# --- management --------------------------------------------------------------------------------

def test_management_needs_the_token(env):
    server, _, root = env
    token_file = root.parent / "token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    for path in ("/models", "/metrics", "/models/mlp"):
        status, error = _json(server.manage("GET", path, token=False))
        assert status == 401 and error["type"] == "UnauthorizedException"
    status, _, _ = server.request("GET", server.management + "/models",
                                  headers={"Authorization": "Bearer wrong-token"})
    assert status == 401
    status, listing = _json(server.manage("GET", "/models"))
    assert status == 200 and {"modelName": "mlp", "modelUrl": "mlp"} in listing["models"]
    status, _ = _json(server.manage("POST", "/models?url=extra", token=False))
    assert status == 401


@pytest.mark.parametrize("url, words", [
    ("../outside/stolen", "not allowed"),
    ("/etc/passwd", "only"),
    ("http://example.com/m.mkb", "never from a URL"),
    ("escape", "leads outside the model store"),
    ("evil", "leads outside the model store"),
    ("broken", "not a servable .mkb"),
    ("missing", "not in the model store"),
    ("mlp", "already registered"),
])
def test_registration_refuses_anything_but_valid_store_models(env, url, words):
    server, _, _ = env
    status, error = _json(server.manage("POST", f"/models?url={urllib.parse.quote(url, safe='')}"))
    assert status in (400, 409) and words in error["message"], error


def test_register_and_unregister_while_requests_are_in_flight(env):
    server, oracles, _ = env
    x = _mlp_input(2, seed=7)
    expected = oracles["mlp"].run(None, {"x": x})[0]
    stop = threading.Event()
    results = []

    def hammer(model):
        while not stop.is_set():
            status, answer = _json(server.infer("POST", f"/predictions/{model}", {"x": x.tolist()}))
            results.append((model, status, answer))

    with ThreadPoolExecutor(3) as pool:
        pool.submit(hammer, "mlp")
        status, answer = _json(server.manage("POST", "/models?url=extra&initial_workers=2"))
        assert status == 200 and "registered" in answer["status"]
        assert len(server.describe("extra")["workers"]) == 2
        pool.submit(hammer, "extra")
        pool.submit(hammer, "extra")
        time.sleep(0.5)
        status, answer = _json(server.manage("DELETE", "/models/extra"))
        assert status == 200 and "unregistered" in answer["status"]
        time.sleep(0.3)
        stop.set()
    extra = [r for r in results if r[0] == "extra"]
    assert any(s == 200 for _, s, _ in extra) and extra[-1][1] == 404
    assert {s for _, s, _ in extra} <= {200, 404, 503}
    for model, status, answer in results:
        if status == 200:
            np.testing.assert_allclose(np.array(answer["probs"]), expected, rtol=1e-5, atol=1e-6)
    assert all(s == 200 for m, s, _ in results if m == "mlp")
    assert _json(server.manage("GET", "/models/extra"))[0] == 404


def test_unregistering_finishes_a_running_request(env):
    server, _, _ = env
    assert _json(server.manage("POST", "/models?url=extra"))[0] == 200
    status, _ = _json(server.manage("PUT", "/models/busy?min_worker=1"))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(server.infer, "POST", "/v2/models/busy/versions/1/infer",
                              {"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [4000]}]})
        time.sleep(0.3)
        status, answer = _json(server.manage("DELETE", "/models/busy/1"))
        assert status == 200 and "['1']" in answer["status"]
        assert running.done()  # DELETE answered only after the running request had finished
        status, answer = _json(running.result(timeout=60))
    assert status == 200 and answer["outputs"][0]["data"] == [pytest.approx(4000.0 ** 3, rel=1e-3)]
    assert _json(server.infer("GET", "/v2/models/busy/versions/1"))[0] == 404
    assert _json(server.infer("GET", "/v2/models/busy"))[1]["versions"] == ["2"]
    assert _json(server.manage("DELETE", "/models/extra"))[0] == 200


def test_scale_workers(env):
    server, _, _ = env
    status, _ = _json(server.manage("PUT", "/models/mlp?min_worker=3"))
    assert status == 200
    workers = server.describe("mlp")["workers"]
    assert len({w["pid"] for w in workers}) == 3 and all(w["memoryUsage"] > 0 for w in workers)
    assert _json(server.manage("PUT", "/models/mlp?min_worker=1"))[0] == 200
    deadline = time.monotonic() + 20
    while len(server.describe("mlp")["workers"]) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.describe("mlp")["workers"]) == 1
    for bad in ("0", "65", "two", ""):
        status, error = _json(server.manage("PUT", f"/models/mlp?min_worker={bad}"))
        assert status == 400, error
    assert _json(server.manage("PUT", "/models/nope?min_worker=2"))[0] == 404


def test_killed_worker_is_replaced_and_its_request_fails_with_503(env):
    server, _, _ = env
    (victim,) = [w["pid"] for w in server.describe("busy")["workers"]]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(server.infer, "POST", "/v2/models/busy/infer",
                              {"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [6000]}]})
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        status, error = _json(running.result(timeout=60))
    assert status == 503 and "died" in error["error"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = server.describe("busy")["workers"]
        if workers and workers[0]["pid"] != victim and workers[0]["status"] == "READY":
            break
        time.sleep(0.05)
    assert workers[0]["pid"] != victim and not pid_alive(victim)
    status, answer = _json(server.infer("POST", "/v2/models/busy/infer", {"inputs": [
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [3]}]}))
    assert status == 200 and answer["outputs"][0]["data"] == [27.0]
    _, _, text = server.manage("GET", "/metrics")
    assert b'modelkit_worker_restarts_total{model="busy",version="2"} 1.0' in text


def test_metrics_count_requests_by_model_and_status(env):
    server, _, _ = env
    server.infer("POST", "/v2/models/mlp/infer", {"inputs": []})
    server.infer("POST", "/v2/models/no-such-model-xyz/infer", {"inputs": []})
    status, headers, text = server.manage("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = text.decode()
    assert 'modelkit_requests_total{api="v2",model="mlp",status="400"}' in text
    assert 'modelkit_requests_total{api="v2",model="_unknown",status="404"}' in text
    assert "no-such-model-xyz" not in text  # client-chosen names never become labels
    for name in ("modelkit_request_latency_seconds_bucket", "modelkit_queue_depth",
                 "modelkit_session_calls_total", "modelkit_workers"):
        assert name in text


# --- shutdown, startup ---------------------------------------------------------------------------

def test_graceful_shutdown_finishes_in_flight_requests(tmp_path):
    root, outside = tmp_path / "store", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    build_store(str(root), str(outside))
    server = ServerProcess(str(root), "--models", "busy", "--no-auth")
    try:
        assert server.token is None and _json(server.manage("GET", "/models", token=False))[0] == 200
        (worker,) = [w["pid"] for w in server.describe("busy")["workers"]]
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(server.infer, "POST", "/v2/models/busy/infer",
                                  {"inputs": [{"name": "n", "shape": [1], "datatype": "INT64", "data": [4000]}]})
            time.sleep(0.4)
            server.proc.send_signal(signal.SIGTERM)
            status, answer = _json(running.result(timeout=60))
        assert status == 200 and answer["outputs"][0]["data"] == [pytest.approx(4000.0 ** 3, rel=1e-3)]
        assert server.proc.wait(30) == 0
        assert not pid_alive(worker)
        with pytest.raises(OSError):
            server.infer("GET", "/v2/health/live", timeout=5)
    finally:
        server.kill()


@pytest.mark.parametrize("args, words", [
    (["--models", "broken"], "model 'broken' version 1: not a servable .mkb file (ModelFormatError"),
    (["--models", "escape"], "leads outside the model store"),
    (["--models", "../x"], "is not allowed"),
    (["--models", "nothing"], "is not in the model store"),
    (["--models", "mlp", "--management-host", "0.0.0.0"], "--no-auth with --management-host"),
])
def test_startup_refusals_exit_2_with_one_readable_line(tmp_path, args, words):
    root, outside = tmp_path / "store", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    build_store(str(root), str(outside))
    done = subprocess.run([sys.executable, "-c", "from modelkit.cli.main import cli; cli()", "serve",
                           "--model-store", str(root), "--port", "0", "--management-port", "0",
                           "--no-auth", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and words in done.stderr and "Traceback" not in done.stderr


def test_cli_import_stays_light_and_serve_has_help():
    done = subprocess.run([sys.executable, "-c", "import sys, modelkit.cli.main;"
                           " print(sorted(m for m in ('starlette', 'uvicorn', 'prometheus_client') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
    done = subprocess.run([sys.executable, "-c", "from modelkit.cli.main import cli; cli()", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--model-store" in done.stdout and "--no-auth" in done.stdout
