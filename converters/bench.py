"""Latency and throughput of a model in the edge runtime, and optionally in onnxruntime in the
same run on the same inputs (DESIGN §9: figures are side-by-side ratios).

Example:
    >>> import os, tempfile, numpy as np
    >>> from modelkit.edge_runtime import format as mkb
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> m = Model([ValueInfo("x", "float32", ("batch", 4))], [ValueInfo("y", "float32", ("batch", 4))],
    ...           [Node("Relu", ["x"], ["y"])])
    >>> path = os.path.join(tempfile.mkdtemp(), "relu.mkb"); mkb.write(m, path)
    >>> result = benchmark(path, batch=8, warmup=1, iters=5, vs_onnxruntime=True)
    >>> [(s.runtime, s.batch, s.iters) for s in result.stats], result.ratio > 0
    ([('edge runtime', 8, 5), ('onnxruntime', 8, 5)], True)
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from modelkit.converters.convert import load_graph, model_format
from modelkit.converters.feeds import open_session, random_feeds
from modelkit.converters.quantize import to_onnx_nodes
from modelkit.edge_runtime import TensorSpec
from modelkit.exporter import onnx_writer


@dataclass
class LatencyStats:
    """Per-call latency percentiles (milliseconds) and throughput (samples per second)."""

    runtime: str
    batch: int
    iters: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float

    @classmethod
    def of(cls, runtime: str, batch: int, seconds: list[float]) -> "LatencyStats":
        """Statistics of the per-call `seconds`.

        Example:
            >>> LatencyStats.of("x", 2, [0.001, 0.002, 0.003]).p50_ms
            2.0
        """
        ms = np.asarray(seconds) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(runtime, batch, len(ms), float(p50), float(p90), float(p99),
                   float(ms.mean()), float(batch * len(ms) / max(sum(seconds), 1e-12)))


@dataclass
class BenchResult:
    """All runtimes' statistics; `ratio` is edge runtime p50 / onnxruntime p50 (None without)."""

    model: str
    inputs: dict[str, list]
    stats: list[LatencyStats] = field(default_factory=list)
    ratio: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def benchmark(path, *, batch: int = 1, device: str = "cpu", warmup: int = 10, iters: int = 100,
              vs_onnxruntime: bool = False, dims: Optional[dict[str, int]] = None,
              progress: Optional[Callable[[Iterable, str], Iterable]] = None,
              ) -> BenchResult:
    """Time `iters` runs (after `warmup`) of the model at `path` on random inputs whose leading
    symbolic dim is `batch` (other symbolic dims from `dims`, else 1). `progress(items, label)`
    may wrap each runtime's timed iterations (a progress bar).

    Example: see the module docstring.
    """
    session = open_session(path, device)
    feeds = random_feeds(session.inputs, _dims(session.inputs, batch, dims or {}))
    result = BenchResult(os.fspath(path), {k: list(v.shape) for k, v in feeds.items()})
    runs = [("edge runtime", session.run)]
    if vs_onnxruntime:
        runs.append(("onnxruntime", _onnxruntime_runner(path)))
    for name, run in runs:
        iterations = progress(range(iters), name) if progress else range(iters)
        seconds = time_calls(run, feeds, warmup, iterations)
        result.stats.append(LatencyStats.of(name, batch, seconds))
    if vs_onnxruntime:
        result.ratio = result.stats[0].p50_ms / result.stats[1].p50_ms
    return result


def time_calls(run: Callable, feeds: dict, warmup: int, iterations: Iterable) -> list[float]:
    """Seconds per call of `run(feeds)` for each of `iterations`, after `warmup` untimed calls.

    Example:
        >>> len(time_calls(lambda feeds: None, {}, 1, range(3)))
        3
    """
    for _ in range(warmup):
        run(feeds)
    seconds = []
    for _ in iterations:
        start = time.perf_counter()
        run(feeds)
        seconds.append(time.perf_counter() - start)
    return seconds


def _dims(specs: list[TensorSpec], batch: int, dims: dict[str, int]) -> dict[str, int]:
    leading = {s.shape[0]: batch for s in specs
               if s.shape and isinstance(s.shape[0], str)}
    return {**leading, **dims}


def _onnxruntime_runner(path) -> Callable:
    import onnxruntime

    if model_format(path) == "onnx":
        model = os.fspath(path)
    else:  # the same graph, written as ONNX
        graph = load_graph(path)
        to_onnx_nodes(graph)
        with tempfile.TemporaryDirectory(prefix="modelkit-bench-") as folder:
            onnx_path = os.path.join(folder, "model.onnx")
            onnx_writer.save(graph, onnx_path)
            with open(onnx_path, "rb") as f:
                model = f.read()
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)
