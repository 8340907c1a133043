"""Authoring training step vs PyTorch: forward + cross-entropy + backward + Adam, same
architecture (`benchmarks/models.py`, same initial weights), same batch, same process.

The two frameworks are timed in alternating blocks (see `runtime.interleaved_medians`) and the
ratio is modelkit / PyTorch. Without torch installed only modelkit's step times are reported.

Example:
    python benchmarks/training.py --models cnn --budget 3 --json /tmp/training.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
from runtime import interleaved_medians  # noqa: E402

BATCH = {"mlp": 64, "cnn": 64, "transformer": 16, "resnet18": 16}
"""The issue's batch sizes (ResNet-18 has no PyTorch figure there; 16 keeps a step short)."""


def modelkit_step(name, batch, device="cpu"):
    """A function running one authoring training step of model `name` on a fixed batch, on
    `device` ("cpu" or "cuda").

    Example:
        >>> step = modelkit_step("mlp", 4)
        >>> step() > 0
        True
    """
    import modelkit.authoring as mk

    model = models.build(name).train().to(device)
    optimizer = mk.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = mk.nn.CrossEntropyLoss()
    x = mk.tensor(models.example_input(name, batch), device=device)
    y = mk.tensor(models.example_labels(batch), device=device)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.item())  # on cuda this waits for the GPU, as torch's .item() does
    return step


def torch_step(name, batch, device="cpu"):
    """The same step in PyTorch eager, from the same initial weights, on `device`.

    Example:
        >>> import pytest; _ = pytest.importorskip("torch")
        >>> torch_step("mlp", 4)() > 0
        True
    """
    import torch

    model = models.build_torch(name, like=models.build(name)).train().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.from_numpy(models.example_input(name, batch)).to(device)
    y = torch.from_numpy(models.example_labels(batch)).to(device)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.item())
    return step


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def bench_model(name, budget_s):
    batch = BATCH[name]
    ours = modelkit_step(name, batch)
    row = {"model": name, "batch": batch}
    if has_torch():
        theirs = torch_step(name, batch)
        first_ours, first_theirs = ours(), theirs()
        row["first_loss"] = {"modelkit": first_ours, "pytorch": first_theirs}
        (t_ours, t_torch), spread = interleaved_medians([ours, theirs], budget_s, warmup=2)
        row.update(modelkit_ms=t_ours * 1e3, pytorch_ms=t_torch * 1e3, ratio=t_ours / t_torch,
                   spread=spread)
    else:
        (t_ours,), spread = interleaved_medians([ours], budget_s, warmup=2)
        row.update(modelkit_ms=t_ours * 1e3, spread=spread)
    return row


def markdown(rows):
    """The rows as a markdown table (ratio = modelkit / PyTorch).

    Example:
        >>> markdown([{"model": "m", "batch": 4, "modelkit_ms": 3.0}]).splitlines()[2]
        '| m | 4 | 3.00 |  |  |'
    """
    lines = ["| model | batch | modelkit step ms | PyTorch step ms | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        torch_cells = (f"{r['pytorch_ms']:.2f} | {r['ratio']:.2f}" if "pytorch_ms" in r else " | ")
        lines.append(f"| {r['model']} | {r['batch']} | {r['modelkit_ms']:.2f} | {torch_cells} |")
    return "\n".join(lines)


def run_all(budget_s, names=("mlp", "cnn", "transformer", "resnet18")):
    """Benchmark each model in `names`, printing each row as it is done."""
    rows = []
    for name in names:
        rows.append(bench_model(name, budget_s))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=6.0,
                        help="seconds of interleaved timing per model")
    parser.add_argument("--models", nargs="*", default=["mlp", "cnn", "transformer", "resnet18"],
                        choices=list(BATCH))
    parser.add_argument("--json", type=pathlib.Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = run_all(args.budget, args.models)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"training": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
