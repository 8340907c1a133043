"""Serving benchmark: throughput and p50/p90/p99 latency of `modelkit serve` on loopback, at
concurrency 1, 8 and 32, with and without dynamic batching, for a digits CNN and a digits ResNet.

NOTE: the models are built here with onnx.helper in the shapes of samples/cnn_digits (1x8x8
input, three conv/BN/ReLU stages, two max-pools, Linear) and samples/resnet_digits (1x32x32 input,
strided stem, three BasicBlocks, global average pool, Linear), with seeded random weights: the
trained samples cannot be exported to .mkb until the tracer lands. Latency does not depend on the
weights' values.

Each model is served twice from one store: `NAME` (no batching) and `NAME_batched`
(max_batch_size 32, max_queue_delay_us 2000), one worker each. The load generator is an asyncio
client in this process (keep-alive HTTP/1.1, one connection per concurrent client) sending KServe
v2 requests with one image each, for a bounded time and request count per point.

Example:
    python benchmarks/serving.py --duration 3 --json benchmarks/serving_results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time

import numpy as np

CONCURRENCY = (1, 8, 32)
BATCHED_CONFIG = {"max_batch_size": 32, "max_queue_delay_us": 2000}


def _conv_bn(rng, nodes, inits, x, name, c_in, c_out, stride=1, kernel=3, relu=True):
    from onnx import helper, numpy_helper

    w = (rng.standard_normal((c_out, c_in, kernel, kernel)) * (2.0 / (c_in * kernel * kernel)) ** 0.5)
    inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}_w"),
              numpy_helper.from_array(np.ones(c_out, np.float32), f"{name}_scale"),
              numpy_helper.from_array(np.zeros(c_out, np.float32), f"{name}_bias"),
              numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32) * 0.1, f"{name}_mean"),
              numpy_helper.from_array(np.ones(c_out, np.float32), f"{name}_var")]
    pad = kernel // 2
    nodes += [helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_c"], strides=[stride, stride],
                               pads=[pad] * 4),
              helper.make_node("BatchNormalization", [f"{name}_c", f"{name}_scale", f"{name}_bias",
                                                      f"{name}_mean", f"{name}_var"], [f"{name}_n"])]
    if not relu:
        return f"{name}_n"
    nodes.append(helper.make_node("Relu", [f"{name}_n"], [f"{name}_r"]))
    return f"{name}_r"


def _classifier(rng, nodes, inits, x, features):
    from onnx import helper, numpy_helper

    inits += [numpy_helper.from_array((rng.standard_normal((10, features)) * 0.1).astype(np.float32), "fc_w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes += [helper.make_node("Flatten", [x], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]


def _proto(nodes, inits, size):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def cnn_digits():
    """samples/cnn_digits' shapes: (batch, 1, 8, 8) -> (batch, 10)."""
    from onnx import helper

    rng, nodes, inits = np.random.default_rng(0), [], []
    h = _conv_bn(rng, nodes, inits, "x", "c1", 1, 16)
    h = _conv_bn(rng, nodes, inits, h, "c2", 16, 32)
    nodes.append(helper.make_node("MaxPool", [h], ["p1"], kernel_shape=[2, 2], strides=[2, 2]))
    h = _conv_bn(rng, nodes, inits, "p1", "c3", 32, 64)
    nodes.append(helper.make_node("MaxPool", [h], ["p2"], kernel_shape=[2, 2], strides=[2, 2]))
    _classifier(rng, nodes, inits, "p2", 64 * 2 * 2)
    return _proto(nodes, inits, 8)


def resnet_digits():
    """samples/resnet_digits' shapes: (batch, 1, 32, 32) -> (batch, 10)."""
    from onnx import helper

    rng, nodes, inits = np.random.default_rng(1), [], []
    h = _conv_bn(rng, nodes, inits, "x", "stem", 1, 16, stride=2)
    for i, (c_in, c_out, stride) in enumerate([(16, 16, 1), (16, 32, 2), (32, 64, 2)]):
        a = _conv_bn(rng, nodes, inits, h, f"b{i}a", c_in, c_out, stride)
        b = _conv_bn(rng, nodes, inits, a, f"b{i}b", c_out, c_out, relu=False)
        skip = h if stride == 1 and c_in == c_out else _conv_bn(rng, nodes, inits, h, f"b{i}d", c_in, c_out,
                                                                 stride, kernel=1, relu=False)
        nodes += [helper.make_node("Add", [b, skip], [f"b{i}_sum"]),
                  helper.make_node("Relu", [f"b{i}_sum"], [f"b{i}_out"])]
        h = f"b{i}_out"
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"]))
    _classifier(rng, nodes, inits, "gap", 64)
    return _proto(nodes, inits, 32)


MODELS = {"cnn_digits": (cnn_digits, 8), "resnet_digits": (resnet_digits, 32)}


def build_store(root: str) -> None:
    """Write NAME.mkb and NAME_batched/1/model.mkb (+ config.json) for every benchmark model."""
    from modelkit.edge_runtime import format as model_format
    from modelkit.edge_runtime.format.onnx_reader import read_onnx

    for name, (build, _) in MODELS.items():
        model = read_onnx(build())
        model_format.write(model, os.path.join(root, f"{name}.mkb"))
        os.makedirs(os.path.join(root, f"{name}_batched", "1"))
        model_format.write(model, os.path.join(root, f"{name}_batched", "1", "model.mkb"))
        with open(os.path.join(root, f"{name}_batched", "config.json"), "w") as f:
            json.dump(BATCHED_CONFIG, f)


def start_server(store: str) -> tuple[subprocess.Popen, dict]:
    """`modelkit serve` on ephemeral ports; returns (process, its ready line)."""
    proc = subprocess.Popen([sys.executable, "-c", "from modelkit.cli.main import cli; cli()", "serve",
                             "--model-store", store, "--port", "0", "--management-port", "0", "--no-auth"],
                            stdout=subprocess.PIPE)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=120):
        proc.kill()
        raise RuntimeError("the server did not start within 120 s")
    return proc, json.loads(proc.stdout.readline())


async def _client(host, port, request: bytes, deadline: float, budget: list, latencies: list):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"the server answered {status}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def measure(url: str, model: str, size: int, concurrency: int, duration: float, max_requests: int) -> dict:
    """Drive `model` with `concurrency` clients for `duration` s (at most `max_requests`)."""
    host, port = url.split("//")[1].split(":")
    image = np.random.default_rng(2).random((1, 1, size, size), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": list(image.shape), "datatype": "FP32",
                                   "data": image.ravel().tolist()}]}).encode()
    request = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    warm: list = []
    await asyncio.gather(*(_client(host, int(port), request, time.perf_counter() + 0.3, [50], warm)
                           for _ in range(concurrency)))
    latencies: list = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, int(port), request, started + duration, [max_requests // concurrency],
                                   latencies) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"model": model, "concurrency": concurrency, "requests": len(latencies),
            "throughput_rps": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99))}


def big_mlp():
    """MLP 1024-2048-2048-10 (about 25 MB of float32 weights), for the memory measurement."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    sizes, nodes, inits, prev = [1024, 2048, 2048, 10], [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((n_in, n_out)) * 0.02).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        prev = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1024])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def measure_memory(workers=(1, 4)) -> list[dict]:
    """RSS and PSS of each worker serving `big_mlp` with 1 and then 4 workers (after every
    worker has run the model, so its weights are paged in). PSS charges each shared page to
    the processes that map it in equal parts, so the PSS sum is the real total."""
    import urllib.request

    from modelkit.edge_runtime import format as model_format
    from modelkit.edge_runtime.format.onnx_reader import read_onnx

    rows = []
    with tempfile.TemporaryDirectory() as store:
        path = os.path.join(store, "big_mlp.mkb")
        model_format.write(read_onnx(big_mlp()), path)
        proc, ready = start_server(store)
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1024], "datatype": "FP32",
                                       "data": [0.5] * 1024}]}).encode()
        try:
            for n in workers:
                urllib.request.urlopen(urllib.request.Request(
                    ready["management"] + f"/models/big_mlp?min_worker={n}", method="PUT"), timeout=120).read()
                for _ in range(3 * n):  # idle workers rotate, so every worker runs the model
                    urllib.request.urlopen(urllib.request.Request(
                        ready["inference"] + "/v2/models/big_mlp/infer", body,
                        {"Content-Type": "application/json"}), timeout=60).read()
                described = json.loads(urllib.request.urlopen(ready["management"] + "/models/big_mlp",
                                                              timeout=60).read())[0]
                rss = [w["memoryUsage"] for w in described["workers"]]
                pss = [w["pss"] for w in described["workers"]]
                rows.append({"workers": n, "weights_mb": os.path.getsize(path) / 2**20,
                             "rss_mb_each": [r / 2**20 for r in rss], "rss_mb_sum": sum(rss) / 2**20,
                             "pss_mb_sum": sum(pss) / 2**20})
        finally:
            proc.terminate()
            proc.wait(60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point")
    parser.add_argument("--max-requests", type=int, default=20000, help="requests per point at most")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--memory", action="store_true",
                        help="only measure worker RSS/PSS with 1 and 4 workers (big_mlp)")
    args = parser.parse_args()
    if args.memory:
        for row in measure_memory():
            print(json.dumps(row))
        return
    with tempfile.TemporaryDirectory() as store:
        build_store(store)
        proc, ready = start_server(store)
        try:
            results = []
            print(f"{'model':24} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
            for name, (_, size) in MODELS.items():
                for model in (name, f"{name}_batched"):
                    for concurrency in CONCURRENCY:
                        r = asyncio.run(measure(ready["inference"], model, size, concurrency,
                                                args.duration, args.max_requests))
                        results.append(r)
                        print(f"{model:24} {concurrency:>4} {r['throughput_rps']:>8.0f} {r['p50_ms']:>8.2f}"
                              f" {r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_count": os.cpu_count(), "batched_config": BATCHED_CONFIG, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
