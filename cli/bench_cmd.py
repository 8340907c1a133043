"""`modelkit bench`: latency percentiles and throughput, optionally against onnxruntime.

Example:
    modelkit bench model.mkb --batch 32 --vs-onnxruntime
"""

from __future__ import annotations

import json

import click

from modelkit.cli.errors import friendly_errors
from modelkit.cli.output import parse_dims, progress


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1),
              help="Size of each input's leading symbolic dim.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of another symbolic dim (repeatable), e.g. seq=128; default 1.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0),
              help="Untimed runs first.")
@click.option("--iters", default=100, show_default=True, type=click.IntRange(1), help="Timed runs.")
@click.option("--vs-onnxruntime", is_flag=True,
              help="Time the same model in onnxruntime in the same run and print the ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for machines.")
@friendly_errors
def bench(model, batch, dims, device, warmup, iters, vs_onnxruntime, as_json):
    """Time MODEL (.mkb or .onnx) in the edge runtime on random inputs.

    Example: modelkit bench model.mkb --batch 32 --vs-onnxruntime
    """
    from modelkit.converters.bench import benchmark

    result = benchmark(model, batch=batch, device=device, warmup=warmup, iters=iters,
                       vs_onnxruntime=vs_onnxruntime, dims=parse_dims(dims),
                       progress=None if as_json else progress)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"{result.model}: inputs " + ", ".join(f"{k} {v}" for k, v in result.inputs.items())
               + f", {iters} runs after {warmup} warm-up")
    click.echo(f"  {'runtime':<13} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>11}")
    for s in result.stats:
        click.echo(f"  {s.runtime:<13} {s.p50_ms:>9.3f} {s.p90_ms:>9.3f} {s.p99_ms:>9.3f} "
                   f"{s.throughput:>11,.0f}")
    if result.ratio is not None:
        click.echo(f"edge runtime / onnxruntime (p50): {result.ratio:.2f}x")
