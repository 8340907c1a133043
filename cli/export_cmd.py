"""`modelkit export`: trace a model.py's model and write `.onnx` and/or `.mkb` files.

Example:
    modelkit export samples/mlp_digits/model.py -o build/ --format both --check
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from modelkit.cli.errors import CHECK_FAILED, friendly_errors
from modelkit.cli.output import human_bytes

CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5


@click.command("export")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False),
              help="Where to write the files (default: beside model.py).")
@click.option("--format", "file_format", type=click.Choice(["onnx", "mkb", "both"]),
              default="both", show_default=True, help="Which files to write.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(13, 23),
              help="ONNX opset of the exported graph.")
@click.option("--no-optimize", is_flag=True,
              help="Skip the graph passes (constant folding, BatchNorm folding, clean-up).")
@click.option("--check", is_flag=True,
              help="Run the files in onnxruntime / the edge runtime against eager on the "
                   "example inputs; exit code 1 when they disagree.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Give up (exit code 2) when loading model.py, building the model and tracing "
                   "it take longer than this.  [default: no limit]")
@friendly_errors
def export(model_file, output_dir, file_format, opset, no_optimize, check, timeout):
    """Export the model that MODEL_FILE's build() returns, traced on example_inputs().

    MODEL_FILE defines build() and example_inputs(), and optionally input_names,
    output_names and dynamic_axes. Writes <stem>.onnx and/or <stem>.mkb.

    Example: modelkit export samples/mlp_digits/model.py -o build/ --check
    """
    model, inputs, graph, written = _export(Path(model_file), output_dir, file_format, opset,
                                            not no_optimize, timeout)
    _report(graph, written)
    if check and not _check(model, inputs, graph, written):
        sys.exit(CHECK_FAILED)


def _export(path: Path, output_dir, file_format: str, opset: int, optimize: bool, timeout):
    from modelkit.exporter import model_file
    from modelkit.exporter.export import export as export_model, write

    with model_file.time_limit(timeout, f"exporting {path}"):
        spec = model_file.load(path)
        model, inputs = spec.instantiate()
        graph = export_model(model, inputs, None, input_names=spec.input_names,
                             output_names=spec.output_names, dynamic_axes=spec.dynamic_axes,
                             opset=opset, optimize=optimize)
    folder = Path(output_dir) if output_dir else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (path.stem + (".onnx" if file_format == "onnx" else ".mkb"))
    written = write(graph, target, file_format)
    return model, inputs, graph, written


def _signature(value) -> str:
    dims = ", ".join(str(d) for d in (value.shape or ()))
    return f"{value.name} {value.dtype}[{dims}]"


def _report(graph, written) -> None:
    for path in written:
        click.echo(f"wrote {path} ({human_bytes(path.stat().st_size)})")
    counts: dict[str, int] = {}
    for node in graph.nodes:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    ops = ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda c: (-c[1], c[0])))
    click.echo(f"{len(graph.nodes)} ops ({ops}), opset {graph.opsets.get('', 17)}")
    click.echo("inputs:  " + ", ".join(_signature(v) for v in graph.inputs))
    click.echo("outputs: " + ", ".join(_signature(v) for v in graph.outputs))


def _check(model, inputs, graph, written) -> bool:
    """Eager vs each written file on the example inputs; prints one line per runtime."""
    import modelkit.authoring as mk
    from modelkit.exporter.export import flat_outputs

    feeds = {v.name: np.asarray(a.array if hasattr(a, "array") else a)
             for v, a in zip(graph.inputs, inputs)}
    with mk.no_grad():
        result = model(*[mk.tensor(a) for a in feeds.values()])
    expected = [t.array for _, t in flat_outputs(result)]
    names = [v.name for v in graph.outputs]
    ok = True
    for path in written:
        runtime, got = _run_file(path, feeds, names)
        worst_abs, worst_rel, agree = 0.0, 0.0, True
        for want, have in zip(expected, got):
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
            worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(want), 1e-30)).max(
                initial=0.0)))
            agree &= have.shape == want.shape and bool(
                np.allclose(have, want, rtol=CHECK_RTOL, atol=CHECK_ATOL))
        verdict = "ok" if agree else "MISMATCH"
        click.echo(f"check {runtime}: max abs error {worst_abs:.3g}, max rel error "
                   f"{worst_rel:.3g} ({verdict}, rtol {CHECK_RTOL:g}, atol {CHECK_ATOL:g})")
        ok &= agree
    return ok


def _run_file(path: Path, feeds: dict, names: list):
    if path.suffix == ".onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return "onnxruntime", session.run(names, feeds)
    from modelkit import edge_runtime
    outputs = edge_runtime.load(path).run(feeds)
    return "edge runtime", [outputs[n] for n in names]
