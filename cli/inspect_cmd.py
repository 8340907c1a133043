"""`modelkit inspect`: what a model file holds (format, opsets, inputs/outputs, ops, weights).

Example:
    modelkit inspect model.mkb --json
"""

from __future__ import annotations

import json

import click

from modelkit.cli.errors import friendly_errors
from modelkit.cli.output import human_bytes


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for machines.")
@friendly_errors
def inspect(model, as_json):
    """Describe MODEL (.onnx or .mkb): format and version, producer, opsets, inputs and outputs
    with shapes, op histogram, parameter count, weight bytes by dtype, quantization, metadata.

    Example: modelkit inspect model.mkb
    """
    from modelkit.converters.describe import describe

    info = describe(model)
    click.echo(json.dumps(info, indent=2) if as_json else as_text(info))


def as_text(info: dict) -> str:
    """The human-readable form of `describe`'s dict.

    Example: `print(as_text(describe("model.mkb")))`.
    """
    version = info.get("producer_version") or info.get("min_runtime_version") or ""
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info["opsets"].items())
    lines = [
        f"{info['path']}: {info['format']} {info['format_version']}, "
        f"{human_bytes(info['file_bytes'])}",
        f"producer: {info['producer']} {version}".rstrip(),
        f"opsets: {opsets}",
        "inputs:",
        *(f"  {_signature(v)}" for v in info["inputs"]),
        "outputs:",
        *(f"  {_signature(v)}" for v in info["outputs"]),
        f"ops ({info['nodes']} nodes): " + ", ".join(f"{op} {n}" for op, n in info["ops"].items()),
        f"parameters: {info['parameters']:,}",
        "weights: " + (", ".join(f"{dtype} {human_bytes(n)}"
                                 for dtype, n in info["weight_bytes"].items()) or "none"),
    ]
    if info["quantized"]:
        kinds = sorted({q["dtype"] for q in info["quantized"].values()})
        lines.append(f"quantized: {len(info['quantized'])} tensor(s) stored as {', '.join(kinds)}")
    if info["metadata"]:
        lines.append("metadata:")
        lines += [f"  {k}: {v}" for k, v in info["metadata"].items()]
    return "\n".join(lines)


def _signature(value: dict) -> str:
    shape = "?" if value["shape"] is None else ", ".join(map(str, value["shape"]))
    return f"{value['name']}: {value['dtype']}[{shape}]"
