"""`make bench`: the runtime and training benchmarks in one go, written to
`benchmarks/results.json` and `benchmarks/results.md` (with the machine they ran on).

Example:
    python benchmarks/bench.py --budget 2 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import runtime  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import training  # noqa: E402


def machine() -> dict:
    """What the numbers were measured on.

    Example:
        >>> sorted(machine())[:2]
        ['cores', 'cpu']
    """
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnxruntime", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
            "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def report(results: dict) -> str:
    """The markdown report of `results` (as written to results.json).

    Example:
        >>> print(report({"machine": {"cpu": "x", "cores": 2, "load_average": 1.0, "date": "d",
        ...                           "versions": {}}, "runtime": [], "training": []}).splitlines()[0])
        # modelkit benchmarks
    """
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return "\n".join([
        "# modelkit benchmarks", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average']:.1f} at the"
        f" start; {versions}; {m['date']}.", "",
        "## Edge runtime vs onnxruntime (same .onnx export, default session options)", "",
        "Medians of blocks of calls interleaved with onnxruntime's; ratio = modelkit / onnxruntime"
        " (lower is better). Cold start: fresh process, import + load + first result, bytecode"
        " compiled.", "",
        runtime.markdown(results["runtime"]), "",
        "## Training step vs PyTorch eager (forward + cross-entropy + backward + Adam)", "",
        training.markdown(results["training"]), ""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=4.0, help="timing seconds per case")
    parser.add_argument("--out", type=pathlib.Path, default=HERE,
                        help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    results = {"machine": machine()}
    print("edge runtime vs onnxruntime", flush=True)
    results["runtime"] = runtime.run_all(args.budget)
    print("training step vs PyTorch", flush=True)
    results["training"] = training.run_all(args.budget * 1.5)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
