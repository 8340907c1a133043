"""`benchmark` (modelkit bench's library function): statistics and the onnxruntime side."""

from pathlib import Path

import pytest

from modelkit.converters.bench import LatencyStats, benchmark
from modelkit.converters.convert import convert

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_latency_statistics_against_numpy_percentiles():
    stats = LatencyStats.of("x", 4, [0.004, 0.001, 0.002, 0.003])
    assert stats.p50_ms == pytest.approx(2.5) and stats.mean_ms == pytest.approx(2.5)
    assert stats.throughput == pytest.approx(16 / 0.010)


@pytest.mark.parametrize("suffix", [".onnx", ".mkb"])
def test_edge_runtime_vs_onnxruntime(tmp_path, suffix):
    path = FIXTURES / "torch_mlp.onnx"
    if suffix == ".mkb":
        convert(path, tmp_path / "m.mkb", quantize="int8")
        path = tmp_path / "m.mkb"
    seen = []
    result = benchmark(path, batch=4, warmup=1, iters=3, vs_onnxruntime=True,
                       progress=lambda items, label: seen.append(label) or items)
    assert result.inputs == {"x": [4, 64]}
    assert [(s.runtime, s.iters, s.batch) for s in result.stats] == [
        ("edge runtime", 3, 4), ("onnxruntime", 3, 4)]
    assert seen == ["edge runtime", "onnxruntime"]
    assert result.ratio == pytest.approx(result.stats[0].p50_ms / result.stats[1].p50_ms)
