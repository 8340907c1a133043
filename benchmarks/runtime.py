"""Edge runtime vs onnxruntime on the same ONNX files, side by side in one process.

Models are built with onnx.helper in the shapes of the performance table (MLP 784-512-512-10,
CNN 2x conv3x3+pool on 1x28x28); both runtimes run the same `.onnx` with default options,
interleaved, and the medians after warm-up give the latency ratio. Cold start and peak RSS are
measured in fresh processes (import + load + first run).

Example:
    python benchmarks/runtime.py --iters 200 --json benchmarks/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np


def _weight(rng, *shape):
    return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)


def mlp_model():
    """MLP 784-512-512-10 with ReLU, dynamic batch; returns (ModelProto, MFLOP per sample)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = [784, 512, 512, 10]
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array(_weight(rng, n_out, n_in), f"w{i}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], ["y" if last else f"g{i}"], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    flops = 2 * sum(a * b for a, b in zip(sizes, sizes[1:]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (1, 784), flops / 1e6


def cnn_model():
    """conv3x3(1->32) ReLU maxpool2 conv3x3(32->64) ReLU maxpool2 Linear(3136->128) ReLU Linear(10)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(_weight(rng, 32, 1, 3, 3), "c1w"),
        numpy_helper.from_array(np.zeros(32, np.float32), "c1b"),
        numpy_helper.from_array(_weight(rng, 64, 32, 3, 3), "c2w"),
        numpy_helper.from_array(np.zeros(64, np.float32), "c2b"),
        numpy_helper.from_array(_weight(rng, 128, 3136), "f1w"),
        numpy_helper.from_array(np.zeros(128, np.float32), "f1b"),
        numpy_helper.from_array(_weight(rng, 10, 128), "f2w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "f2b"),
    ]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], **conv),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], **pool),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], **conv),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], **pool),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "f1w", "f1b"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "f2w", "f2b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    flops = 2 * (28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 128 + 128 * 10)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (1, 1, 28, 28), flops / 1e6


MODELS = {"mlp": mlp_model, "cnn": cnn_model}


def interleaved_medians(fns, iters, warmup):
    """Median seconds per call of each function, calls interleaved so drift hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


COLD_START = """
import resource
import numpy as np
{body}
out = run({{"x": np.zeros({shape}, np.float32)}})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
COLD_BODIES = {
    "modelkit": "import modelkit.edge_runtime as rt\nrun = rt.load({path!r}).run",
    "onnxruntime": ("import onnxruntime as ort\n"
                    "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
                    "run = lambda feeds: s.run(None, feeds)"),
}


def cold_start(engine, mkb_or_onnx, shape, repeats=5):
    """Median (seconds, peak RSS MiB) of a fresh interpreter starting, importing, loading and
    running once, timed from outside the process.

    Bytecode is allowed (PYTHONDONTWRITEBYTECODE removed) and the first run, which compiles it,
    is discarded: that is how a user's installed package starts.
    """
    code = COLD_START.format(body=COLD_BODIES[engine].format(path=str(mkb_or_onnx)), shape=shape)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
        runs.append((time.perf_counter() - start, float(out.stdout)))
    runs = runs[1:]
    return tuple(float(np.median([r[i] for r in runs])) for i in range(2))


def bench_model(name, iters, warmup, workdir):
    import onnx
    import onnxruntime as ort

    import modelkit.edge_runtime as rt
    from modelkit.edge_runtime.format import write
    from modelkit.edge_runtime.format.onnx_reader import read_onnx

    proto, sample_shape, mflop = MODELS[name]()
    onnx_path, mkb_path = workdir / f"{name}.onnx", workdir / f"{name}.mkb"
    onnx.save(proto, onnx_path)
    write(read_onnx(proto), mkb_path)
    ours = rt.load(mkb_path)
    theirs = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    row = {"model": name, "mflop_per_sample": mflop}
    for batch in (1, 32):
        x = np.random.default_rng(1).standard_normal((batch,) + sample_shape[1:]).astype(np.float32)
        np.testing.assert_allclose(ours.run({"x": x})["y"], theirs.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
        t_ours, t_ort = interleaved_medians(
            [lambda: ours.run({"x": x}), lambda: theirs.run(None, {"x": x})], iters, warmup)
        row[f"b{batch}"] = {"modelkit_ms": t_ours * 1e3, "onnxruntime_ms": t_ort * 1e3,
                            "ratio": t_ours / t_ort, "modelkit_gflops": mflop * batch / t_ours / 1e3}
    mk_cold, mk_rss = cold_start("modelkit", mkb_path, sample_shape)
    ort_cold, ort_rss = cold_start("onnxruntime", onnx_path, sample_shape)
    row["cold_start"] = {"modelkit_s": mk_cold, "onnxruntime_s": ort_cold, "ratio": mk_cold / ort_cold,
                         "modelkit_rss_mib": mk_rss, "onnxruntime_rss_mib": ort_rss,
                         "rss_ratio": mk_rss / ort_rss}
    return row


def markdown(rows):
    lines = ["| model | b1 modelkit ms | b1 ort ms | b1 ratio | b32 modelkit ms | b32 ort ms | b32 ratio "
             "| cold start ratio | peak RSS ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b1, b32, cold = r["b1"], r["b32"], r["cold_start"]
        lines.append(f"| {r['model']} | {b1['modelkit_ms']:.3f} | {b1['onnxruntime_ms']:.3f} | {b1['ratio']:.2f} "
                     f"| {b32['modelkit_ms']:.3f} | {b32['onnxruntime_ms']:.3f} | {b32['ratio']:.2f} "
                     f"| {cold['ratio']:.2f} | {cold['rss_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json", type=pathlib.Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_model(name, args.iters, args.warmup, pathlib.Path(tmp)) for name in args.models]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"runtime": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
