"""`modelkit run`: run a `.mkb` or `.onnx` model with the edge runtime and summarize its outputs.

Example:
    modelkit run model.mkb --random --dim batch=8 --output out.npz
"""

from __future__ import annotations

import click
import numpy as np

from modelkit.cli.errors import friendly_errors
from modelkit.cli.output import parse_dims


@click.command("run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME=FILE",
              help="An input from a .npy file (NAME=x.npy), or all inputs from a .npz (repeatable).")
@click.option("--random", "random_inputs", is_flag=True,
              help="Random values for every input not given (from the model's input spec).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic dim for --random (repeatable), e.g. batch=8; default 1.")
@click.option("--seed", default=0, show_default=True, help="Seed of --random.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Save the outputs to this .npz file.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--profile", type=click.Path(dir_okay=False),
              help="Write per-node timings as Chrome-trace JSON (open in ui.perfetto.dev).")
@friendly_errors
def run(model, inputs, random_inputs, dims, seed, output, device, profile):
    """Run MODEL (.mkb or .onnx) on the given inputs; print each output's shape, dtype and values.

    Example: modelkit run model.mkb --input x=images.npy --output out.npz
    """
    from modelkit.converters.feeds import open_session, random_feeds, read_feeds

    session = open_session(model, device, profile=bool(profile))
    feeds = read_feeds(list(inputs), session.inputs)
    missing = [s for s in session.inputs if s.name not in feeds]
    if missing and not random_inputs:
        raise click.UsageError(f"no value for input(s) {[s.name for s in missing]}; give them "
                               "with --input NAME=FILE.npy, or use --random")
    feeds.update(random_feeds(missing, parse_dims(dims), seed))
    results = session.run(feeds)
    for name, array in results.items():
        click.echo(f"{name}: {summary(array)}")
    if output:
        np.savez(output, **results)
        click.echo(f"saved {len(results)} output(s) to {output}")
    if profile:
        session.save_profile(profile)
        timings = session.profile()
        total_ms = sum(t.duration_ns for t in timings) / 1e6
        click.echo(f"profile: {len(timings)} node runs, {total_ms:.3f} ms in kernels -> {profile}")


def summary(array: np.ndarray, shown: int = 6) -> str:
    """`dtype[shape]` with min/max/mean for numbers and the first few values.

    Example:
        >>> summary(np.array([[0.5, 1.5]], np.float32))
        'float32[1, 2] min 0.5 max 1.5 mean 1 [0.5, 1.5]'
    """
    dtype = "string" if array.dtype.kind in "OSU" else array.dtype.name
    head = f"{dtype}[{', '.join(map(str, array.shape))}]"
    flat = array.reshape(-1)
    values = ", ".join(_value(v) for v in flat[:shown]) + (", ..." if flat.size > shown else "")
    if array.dtype.kind in "fiu" and array.size:
        stats = f" min {_value(flat.min())} max {_value(flat.max())} mean {_value(flat.mean())}"
    else:
        stats = ""
    return f"{head}{stats} [{values}]"


def _value(v) -> str:
    if isinstance(v, (bytes, str)):
        return repr(v.decode() if isinstance(v, bytes) else v)
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)
