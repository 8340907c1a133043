"""Edge runtime vs onnxruntime on the same exported models, side by side in one process.

Each model (the four of `benchmarks/models.py`, then the samples under `samples/`) is exported
once with `modelkit.exporter.export` to `.onnx` and `.mkb`; onnxruntime runs the `.onnx` with
default session options, the edge runtime the `.mkb`. Outputs are checked against each other,
then both are timed at batch 1 and 32, medians after warm-up; at batch 32 the four table models
also run in PyTorch eager (torch.no_grad, same weights) when torch is installed.

NOTE: the two runtimes are interleaved in blocks (BLOCK calls of one, then BLOCK of the other),
not call by call: onnxruntime's default intra-op threads keep spinning for a while after a run
and steal both cores from OpenBLAS if our call follows immediately. Blocks still spread the
drift of a shared machine over both sides alike.

Cold start and peak RSS are measured in fresh interpreters (import + load + first result), see
`cold_start`.

Example:
    python benchmarks/runtime.py --models cnn --budget 2 --json /tmp/runtime.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

SAMPLES = HERE.parent / "samples"
BLOCK = 20


def interleaved_medians(fns, budget_s, warmup=5, min_blocks=3):
    """Median seconds per call of each function, run in alternating blocks of BLOCK calls
    (fewer for slow functions) until `budget_s` seconds have passed and at least
    `min_blocks` blocks each ran. Also returns the relative spread (interquartile / median).

    Example:
        >>> (a, b), _ = interleaved_medians([lambda: None, lambda: sum(range(1000))], 0.01)
        >>> a < b
        True
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    probe = time.perf_counter()
    fns[0]()
    block = max(2, min(BLOCK, int(0.2 / max(time.perf_counter() - probe, 1e-6))))
    times = [[] for _ in fns]
    start, blocks = time.perf_counter(), 0
    while blocks < min_blocks or time.perf_counter() - start < budget_s:
        for fn, bucket in zip(fns, times):
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - t0)
        blocks += 1
    medians = [float(np.median(t)) for t in times]
    spread = [float(np.subtract(*np.percentile(t, [75, 25])) / m) for t, m in zip(times, medians)]
    return medians, spread


# NOTE: peak RSS is VmHWM of the child's own address space; getrusage's ru_maxrss would report
# the benchmark parent's peak, which Linux carries over through fork and exec.
COLD_START = """
import numpy as np
{body}
x = np.load({sample!r})
out = run({{{input!r}: x}})
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""
COLD_BODIES = {
    "modelkit": "import modelkit.edge_runtime as rt\nrun = rt.load({path!r}).run",
    "onnxruntime": ("import onnxruntime as ort\n"
                    "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
                    "run = lambda feeds: s.run(None, feeds)"),
}


def cold_start(engine, model_path, sample_path, input_name, repeats=5):
    """Median (seconds, peak RSS MiB) of a fresh interpreter that imports the runtime, loads the
    model and runs it once on one sample, timed from outside the process.

    Bytecode as a user's install has it: PYTHONDONTWRITEBYTECODE is removed from the child's
    environment and one discarded run first writes every `.pyc` it needs (modelkit's too).
    """
    code = COLD_START.format(body=COLD_BODIES[engine].format(path=str(model_path)),
                             sample=str(sample_path), input=input_name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, env=env)
        runs.append((time.perf_counter() - start, float(out.stdout)))
    runs = runs[1:]
    return tuple(float(np.median([r[i] for r in runs])) for i in range(2))


def benchmark_models():
    """(name, mk.nn model, one-sample input, MFLOP per sample or None) for the four models,
    then for every sample whose model.py builds (untrained weights: speed does not care)."""
    entries = [(name, models.build(name), models.example_input(name, 1),
                models.MFLOP_PER_SAMPLE[name]) for name in models.MODELS]
    for model_file in sorted(SAMPLES.glob("*/model.py")):
        spec = importlib.util.spec_from_file_location(f"sample_{model_file.parent.name}", model_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        (x,) = module.example_inputs()[:1]
        x = np.asarray(getattr(x, "numpy", lambda: x)())[:1]
        entries.append((f"sample:{model_file.parent.name}", module.make_model().eval(), x, None))
    return entries


def export_model(model, sample, workdir, name):
    """Export once to `<name>.onnx` and `<name>.mkb` with a dynamic batch dim."""
    from modelkit.exporter import export

    paths = []
    for suffix in ("onnx", "mkb"):
        path = workdir / f"{name.replace(':', '_')}.{suffix}"
        export(model, (sample,), path, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        paths.append(path)
    return paths


def batch_of(sample, batch):
    return np.ascontiguousarray(np.repeat(sample, batch, axis=0))


def torch_forward(name, model):
    """PyTorch eager inference of the twin of table model `name` (same weights), or None when
    torch is not installed or `name` is a sample."""
    if name not in models.MODELS:
        return None
    try:
        import torch
    except ImportError:
        return None
    twin = models.build_torch(name, like=model)

    def forward(x):
        with torch.no_grad():
            return twin(torch.from_numpy(x))
    return forward


def bench_model(name, model, sample, mflop, budget_s, workdir, cold):
    import onnxruntime as ort

    import modelkit.edge_runtime as rt

    onnx_path, mkb_path = export_model(model, sample, workdir, name)
    ours = rt.load(mkb_path)
    theirs = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pytorch = torch_forward(name, model)
    row = {"model": name, "mflop_per_sample": mflop}
    for batch in (1, 32):
        x = batch_of(sample, batch)
        (got,), (expected,) = ours.run({"x": x}).values(), theirs.run(None, {"x": x})
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
        fns = [lambda: ours.run({"x": x}), lambda: theirs.run(None, {"x": x})]
        if pytorch is not None and batch == 32:
            fns.append(lambda: pytorch(x))
        times, spread = interleaved_medians(fns, budget_s)
        t_ours, t_ort = times[:2]
        row[f"b{batch}"] = {"modelkit_ms": t_ours * 1e3, "onnxruntime_ms": t_ort * 1e3,
                            "ratio": t_ours / t_ort, "spread": spread}
        if len(times) == 3:
            row[f"b{batch}"].update(pytorch_ms=times[2] * 1e3, ratio_vs_pytorch=t_ours / times[2])
        if mflop:
            row[f"b{batch}"]["modelkit_gflops"] = mflop * batch / t_ours / 1e3
            row[f"b{batch}"]["onnxruntime_gflops"] = mflop * batch / t_ort / 1e3
    if cold:
        sample_path = workdir / f"{name.replace(':', '_')}_sample.npy"
        np.save(sample_path, sample)
        mk_cold, mk_rss = cold_start("modelkit", mkb_path, sample_path, "x")
        ort_cold, ort_rss = cold_start("onnxruntime", onnx_path, sample_path, "x")
        row["cold_start"] = {"modelkit_s": mk_cold, "onnxruntime_s": ort_cold,
                             "ratio": mk_cold / ort_cold, "modelkit_rss_mib": mk_rss,
                             "onnxruntime_rss_mib": ort_rss, "rss_ratio": mk_rss / ort_rss}
    return row


def markdown(rows):
    """The rows as a markdown table (times in ms, ratio = modelkit / onnxruntime).

    Example:
        >>> row = {"model": "m", "b1": {"modelkit_ms": 2, "onnxruntime_ms": 1, "ratio": 2},
        ...        "b32": {"modelkit_ms": 4, "onnxruntime_ms": 4, "ratio": 1}}
        >>> markdown([row]).splitlines()[2]
        '| m | 2.000 | 1.000 | 2.00 | 4.000 | 4.000 | 1.00 |  |  |  |  |'
    """
    lines = ["| model | b1 modelkit ms | b1 ort ms | b1 ratio | b32 modelkit ms | b32 ort ms "
             "| b32 ratio | b32 GFLOP/s mk / ort | b32 PyTorch ms (mk / PyTorch) "
             "| cold start s mk / ort (ratio) | peak RSS MiB mk / ort (ratio) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b1, b32, cold = r["b1"], r["b32"], r.get("cold_start")
        gflops = (f"{b32['modelkit_gflops']:.0f} / {b32['onnxruntime_gflops']:.0f}"
                  if "modelkit_gflops" in b32 else "")
        cold_cells = (f"{cold['modelkit_s']:.2f} / {cold['onnxruntime_s']:.2f} ({cold['ratio']:.2f}) "
                      f"| {cold['modelkit_rss_mib']:.0f} / {cold['onnxruntime_rss_mib']:.0f} "
                      f"({cold['rss_ratio']:.2f})") if cold else " | "
        pytorch = (f"{b32['pytorch_ms']:.3f} ({b32['ratio_vs_pytorch']:.2f})"
                   if "pytorch_ms" in b32 else "")
        lines.append(f"| {r['model']} | {b1['modelkit_ms']:.3f} | {b1['onnxruntime_ms']:.3f} "
                     f"| {b1['ratio']:.2f} | {b32['modelkit_ms']:.3f} | {b32['onnxruntime_ms']:.3f} "
                     f"| {b32['ratio']:.2f} | {gflops} | {pytorch} | {cold_cells} |")
    return "\n".join(lines)


def run_all(budget_s, names=None, *, samples=True, cold=True):
    """Benchmark every model (or those in `names`), printing each row as it is done."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, sample, mflop in benchmark_models():
            if (names and name not in names) or (not samples and mflop is None):
                continue
            rows.append(bench_model(name, model, sample, mflop, budget_s, pathlib.Path(tmp), cold))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=4.0,
                        help="seconds of interleaved timing per model and batch size")
    parser.add_argument("--models", nargs="*", help="names to run (default: all)")
    parser.add_argument("--no-samples", action="store_true", help="only the four table models")
    parser.add_argument("--no-cold", action="store_true", help="skip cold start / RSS")
    parser.add_argument("--json", type=pathlib.Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = run_all(args.budget, args.models, samples=not args.no_samples, cold=not args.no_cold)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"runtime": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
