"""`modelkit convert`: `.onnx` <-> `.mkb` by suffix, with optional optimization and quantization.

Example:
    modelkit convert model.onnx model_int8.mkb --quantize int8
"""

from __future__ import annotations

import click

from modelkit.cli.errors import friendly_errors
from modelkit.cli.output import human_bytes


@click.command("convert")
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("destination", type=click.Path(dir_okay=False))
@click.option("--quantize", type=click.Choice(["int8", "fp16"]),
              help="int8: per-output-channel symmetric weights of Conv/Gemm/MatMul/LSTM/GRU; "
                   "fp16: float16 weights. The runtime still computes in float32.")
@click.option("--optimize/--no-optimize", default=True, show_default=True,
              help="Run the exporter's graph passes (constant folding, BatchNorm folding, "
                   "identity and dead-node removal).")
@click.option("--opset", type=click.IntRange(13, 23),
              help="ONNX opset of an .onnx destination (converted with onnx's version converter).")
@friendly_errors
def convert(source, destination, quantize, optimize, opset):
    """Convert SOURCE to DESTINATION (.onnx or .mkb each, by suffix).

    Example: modelkit convert model.onnx model_int8.mkb --quantize int8
    """
    from modelkit.converters.convert import convert as convert_model

    result = convert_model(source, destination, quantize=quantize, optimize=optimize, opset=opset)
    ratio = result.bytes_before / max(result.bytes_after, 1)
    change = f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger"
    click.echo(f"{result.source} ({human_bytes(result.bytes_before)}) -> {result.destination} "
               f"({human_bytes(result.bytes_after)}, {change})")
    rewrites = ", ".join(f"{name} {n}" for name, n in result.passes.items() if n)
    click.echo(f"{result.node_count} nodes" + (f"; optimized: {rewrites}" if rewrites else ""))
    q = result.quantization
    if q is not None:
        click.echo(f"quantized {q.tensors} weight tensor(s) to {q.mode}: "
                   f"{human_bytes(q.bytes_before)} -> {human_bytes(q.bytes_after)}")
