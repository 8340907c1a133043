"""`modelkit check`: the CI conversion check (exit 0 pass, 1 mismatch, 2 bad input).

Example:
    modelkit check samples/cnn_digits/model.py --quantize int8 --junit report.xml
"""

from __future__ import annotations

import sys

import click

from modelkit.cli.errors import CHECK_FAILED, friendly_errors
from modelkit.cli.output import parse_dims


@click.command("check")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False),
              help="A .npz of inputs by name (plus optional 'labels' for the quantized accuracy); "
                   "default: model.py's example_inputs(), or random inputs for a model file.")
@click.option("--rtol", default=1e-4, show_default=True, type=float, help="Relative tolerance.")
@click.option("--atol", default=1e-5, show_default=True, type=float, help="Absolute tolerance.")
@click.option("--quantize", type=click.Choice(["int8", "fp16"]),
              help="Also check the quantized model: top-1 agreement and accuracy change.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic dim for random inputs (repeatable), e.g. batch=8.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Give up (exit code 2) when loading, exporting and checking the model take "
                   "longer than this (a model.py that hangs).  [default: no limit]")
@friendly_errors
def check(model, inputs_file, rtol, atol, quantize, dims, junit, timeout):
    """Run every path of MODEL (a model.py, .onnx or .mkb) on the same inputs and compare.

    A model.py is exported and checked against authoring eager (onnxruntime and the edge
    runtime); an .onnx/.mkb file is converted and checked against onnxruntime. On a mismatch it
    names the first node whose output diverges.

    Example: modelkit check samples/cnn_digits/model.py --quantize int8 --junit report.xml
    """
    from modelkit.converters.check import check as run_check
    from modelkit.converters.feeds import read_arrays
    from modelkit.exporter.model_file import time_limit

    inputs = read_arrays(inputs_file) if inputs_file else None
    with time_limit(timeout, f"checking {model}"):
        report = run_check(model, inputs=inputs, rtol=rtol, atol=atol, quantize=quantize,
                           dims=parse_dims(dims))
    click.echo(report.table())
    if junit:
        report.write_junit(junit)
    if not report.passed:
        sys.exit(CHECK_FAILED)
