"""GPU benchmarks, one run, ratios against PyTorch eager on the same GPU:

- training step (forward + cross-entropy + backward + Adam) of the table models
  (`benchmarks/models.py`, same initial weights, same batch); target ratio <= 2;
- edge-runtime inference latency at batch 1 and 64, numpy in and numpy out on both sides, plain
  and replayed from a CUDA graph (`cuda_graph=True`); target ratio <= 1.5 at batch 64.

Exits with status 2 and one line saying what is missing when cupy, a GPU or torch with CUDA is
not there.

Example:
    python benchmarks/gpu.py --models cnn --budget 3 --json /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import warnings

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
from runtime import interleaved_medians  # noqa: E402
from training import BATCH, modelkit_step, torch_step  # noqa: E402


def missing_requirement() -> str | None:
    """Why this benchmark cannot run here, or None."""
    import modelkit.authoring as mk
    from modelkit.edge_runtime.cuda import CudaUnavailableError, cupy_module

    try:
        cupy_module()
    except CudaUnavailableError as error:
        return str(error)
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (the GPU benchmarks compare against PyTorch eager)"
    if not torch.cuda.is_available():
        return "PyTorch is installed without CUDA support (install a CUDA build of torch)"
    return None if mk.cuda.is_available() else "modelkit sees no CUDA device"


def training_row(name, budget_s):
    batch = BATCH[name]
    ours, theirs = modelkit_step(name, batch, "cuda"), torch_step(name, batch, "cuda")
    (t_ours, t_torch), _ = interleaved_medians([ours, theirs], budget_s, warmup=3)
    return {"model": name, "batch": batch, "modelkit_ms": t_ours * 1e3,
            "pytorch_ms": t_torch * 1e3, "ratio": t_ours / t_torch}


def inference_rows(name, budget_s, workdir):
    import numpy as np
    import torch
    from modelkit import edge_runtime
    from modelkit.exporter import export
    import modelkit.authoring as mk

    model = models.build(name).eval()
    path = workdir / f"{name}.mkb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model, (mk.tensor(models.example_input(name, 1)),), path, input_names=["x"],
               dynamic_axes={"x": {0: "batch"}})
    twin = models.build_torch(name, like=model).eval().cuda()
    rows = []
    for batch in (1, 64):
        x = np.ascontiguousarray(models.example_input(name, batch))
        plain = edge_runtime.load(path, device="cuda")
        graphed = edge_runtime.load(path, device="cuda", cuda_graph=True)

        def torch_forward():
            with torch.no_grad():
                return twin(torch.from_numpy(x).cuda()).cpu().numpy()
        want = torch_forward()
        for session in (plain, graphed):
            got = next(iter(session.run({"x": x}).values()))
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        times, _ = interleaved_medians([lambda: plain.run({"x": x}), lambda: graphed.run({"x": x}),
                                        torch_forward], budget_s, warmup=3)
        t_plain, t_graph, t_torch = times
        rows.append({"model": name, "batch": batch, "modelkit_ms": t_plain * 1e3,
                     "modelkit_cuda_graph_ms": t_graph * 1e3, "pytorch_ms": t_torch * 1e3,
                     "ratio": t_plain / t_torch, "ratio_cuda_graph": t_graph / t_torch})
    return rows


def markdown(training, inference, device):
    lines = [f"GPU: {device}", "", "| training | batch | modelkit ms | PyTorch ms | ratio |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['modelkit_ms']:.2f} | {r['pytorch_ms']:.2f} "
              f"| {r['ratio']:.2f} |" for r in training]
    lines += ["", "| inference | batch | modelkit ms | with cuda_graph ms | PyTorch ms | ratio | "
              "ratio (graph) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['modelkit_ms']:.3f} | "
              f"{r['modelkit_cuda_graph_ms']:.3f} | {r['pytorch_ms']:.3f} | {r['ratio']:.2f} | "
              f"{r['ratio_cuda_graph']:.2f} |" for r in inference]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per row")
    parser.add_argument("--models", nargs="*", default=list(BATCH), choices=list(BATCH))
    parser.add_argument("--json", type=pathlib.Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    missing = missing_requirement()
    if missing is not None:
        print(f"benchmarks/gpu.py needs a CUDA GPU with cupy and PyTorch: {missing}",
              file=sys.stderr)
        return 2
    import cupy

    device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    training = [training_row(name, args.budget) for name in args.models]
    with tempfile.TemporaryDirectory() as folder:
        inference = [row for name in args.models
                     for row in inference_rows(name, args.budget, pathlib.Path(folder))]
    print(markdown(training, inference, device))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "training": training,
                                         "inference": inference}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
