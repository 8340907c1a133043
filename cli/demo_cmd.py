"""`modelkit demo` (behind `make demo`): the whole job in one command, on the cnn_digits sample.

Train briefly, export to ONNX and `.mkb`, check every path agrees, measure the edge runtime's
test accuracy, quantize to int8 (size and accuracy change), compare latency with onnxruntime.

Example:
    modelkit demo --epochs 3 --output-dir build/demo
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from modelkit.cli.errors import CHECK_FAILED, friendly_errors
from modelkit.cli.output import human_bytes

# A source checkout: the samples beside the installed package (editable install), else the
# current directory's (a wheel install run from the checkout's root).
SAMPLES = next((folder for folder in (Path(__file__).resolve().parents[1] / "samples",
                                      Path("samples"))
                if (folder / "cnn_digits" / "model.py").is_file()), Path("samples"))


@click.command("demo")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(1),
              help="Training epochs (cnn_digits reaches ~98% in 4, 99% in 15).")
@click.option("--output-dir", "-o", default="build/demo", show_default=True,
              type=click.Path(file_okay=False), help="Where to write the model files.")
@click.option("--samples", "samples_dir", default=str(SAMPLES), show_default=True,
              type=click.Path(file_okay=False), help="The samples folder of a modelkit checkout.")
@click.option("--iters", default=200, show_default=True, type=click.IntRange(1),
              help="Timed runs per runtime in the latency comparison.")
@friendly_errors
def demo(epochs, output_dir, samples_dir, iters):
    """Train cnn_digits, export, check, run, quantize and benchmark it, in one go.

    Example: modelkit demo --epochs 3
    """
    from modelkit.converters.bench import benchmark
    from modelkit.converters.check import check_model
    from modelkit.converters.convert import convert, file_bytes
    from modelkit.exporter import export

    started = time.perf_counter()
    sample, training = _load_sample(Path(samples_dir))
    x_train, y_train, x_test, y_test = training.load_digits()
    x_test = sample.preprocess(x_test)

    click.secho(f"1. train cnn_digits for {epochs} epoch(s)", bold=True)
    model = sample.make_model()
    trained = training.train(SimpleNamespace(make_model=lambda: model, preprocess=sample.preprocess,
                                             __file__=sample.__file__),
                             epochs=epochs, lr=1e-2, batch_size=64, save=False)
    click.echo(f"   eager test accuracy {trained['accuracy']:.2%} ({trained['seconds']:.1f} s)")

    click.secho("2. export to ONNX and .mkb", bold=True)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, mkb_path = folder / "cnn_digits.onnx", folder / "cnn_digits.mkb"
    graph = export(model.eval(), sample.example_inputs(), folder / "cnn_digits.mkb", format="both",
                   input_names=sample.input_names, dynamic_axes=sample.dynamic_axes)
    click.echo(f"   {onnx_path} ({human_bytes(file_bytes(onnx_path))}), {mkb_path} "
               f"({human_bytes(file_bytes(mkb_path))}), {len(graph.nodes)} nodes")

    click.secho("3. check: eager vs onnxruntime vs edge runtime on the test set", bold=True)
    report = check_model(model, sample.example_inputs(), name="cnn_digits",
                         input_names=sample.input_names, dynamic_axes=sample.dynamic_axes,
                         inputs={"x": x_test, "labels": y_test}, quantize="int8")
    click.echo("\n".join("   " + line for line in report.table().splitlines()))

    click.secho("4. edge runtime on the test set", bold=True)
    accuracy = _accuracy(mkb_path, x_test, y_test)
    click.echo(f"   accuracy {accuracy:.2%} on {len(y_test)} test images")

    click.secho("5. quantize to int8", bold=True)
    int8_path = folder / "cnn_digits_int8.mkb"
    result = convert(mkb_path, int8_path, quantize="int8")
    int8_accuracy = _accuracy(int8_path, x_test, y_test)
    click.echo(f"   {human_bytes(result.bytes_before)} -> {human_bytes(result.bytes_after)} "
               f"({result.bytes_before / result.bytes_after:.1f}x smaller); accuracy "
               f"{int8_accuracy:.2%} ({100 * (int8_accuracy - accuracy):+.2f} points)")

    click.secho("6. latency, edge runtime vs onnxruntime", bold=True)
    for batch in (1, 32):
        bench = benchmark(mkb_path, batch=batch, iters=iters, vs_onnxruntime=True)
        edge, ort = bench.stats
        click.echo(f"   batch {batch:>2}: edge runtime p50 {edge.p50_ms:.3f} ms, onnxruntime p50 "
                   f"{ort.p50_ms:.3f} ms ({bench.ratio:.2f}x)")
    click.echo(f"done in {time.perf_counter() - started:.0f} s; files in {folder}")
    if not report.passed:
        sys.exit(CHECK_FAILED)


def _accuracy(path, x: np.ndarray, y: np.ndarray) -> float:
    from modelkit import edge_runtime

    logits = edge_runtime.load(path).run({"x": x})["output"]
    return float(np.mean(logits.argmax(axis=1) == y))


def _load_sample(samples: Path):
    """cnn_digits' model.py and the shared samples/training.py, imported from `samples`."""
    model_py, training_py = samples / "cnn_digits" / "model.py", samples / "training.py"
    for path in (model_py, training_py):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; modelkit demo runs the samples of a "
                                    "source checkout (give its folder with --samples)")
    return (_import(model_py, "_modelkit_demo_cnn_digits"),
            _import(training_py, "_modelkit_demo_training"))


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
