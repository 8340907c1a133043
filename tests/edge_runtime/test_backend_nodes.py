"""All 1,884 ONNX backend node cases through ONNX -> `read_onnx` -> `.mkb` bytes -> `load` -> run,
compared with the onnx backend runner's own tolerances (and dtypes).

A case is skipped when its model needs something the runtime does not do: an op without a
kernel ("unsupported op: X") or a type the `Model` cannot hold ("unsupported type: ...", e.g.
sequences, optionals, float8). Every other case must pass, except those in `KNOWN_FAILURES`,
each with its reason. The module prints a summary (run, passed, skipped by reason) at the end.
"""

from __future__ import annotations

import collections
import re
import warnings

import numpy as np
import pytest

from modelkit.edge_runtime import format as mkb
from modelkit.edge_runtime import load
from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.kernels import registry
from node_cases import _as_array, assert_outputs_match, node_cases

onnx = pytest.importorskip("onnx")
from modelkit.edge_runtime.format.onnx_reader import read_onnx  # noqa: E402  (needs onnx)

TOTAL_CASES = 1884

# Cases whose ops all have kernels but which fail anyway: case name -> why. An entry that starts
# passing fails the suite, so the list cannot go stale.
_BFLOAT16_CAST = "kernels: Cast/CastLike to bfloat16 not implemented"
KNOWN_FAILURES: dict[str, str] = {
    "test_attention_3d_causal_bf16_expanded": _BFLOAT16_CAST,
    "test_attention_4d_attn_mask_causal_bf16_expanded": _BFLOAT16_CAST,
    "test_attention_4d_causal_bf16_expanded": _BFLOAT16_CAST,
    "test_attention_4d_causal_padded_kv_bf16_expanded": _BFLOAT16_CAST,
    "test_attention_4d_padded_kv_bf16_expanded": _BFLOAT16_CAST,
    "test_cast_FLOAT_to_BFLOAT16": _BFLOAT16_CAST,
    "test_castlike_FLOAT_to_BFLOAT16_expanded": _BFLOAT16_CAST,
    "test_celu_bfloat16": "kernels: Celu returns float32 for a bfloat16 input",
    "test_maxunpool_export_with_output_shape":
        "the case indexes into the smaller inferred shape; the kernel follows onnxruntime and"
        " PyTorch, whose indices address the requested output_shape",
}

_outcomes: collections.Counter = collections.Counter()


def _unsupported_ops(model) -> list[str]:
    opsets = {o.domain or "": o.version for o in model.opset_import}
    default = opsets.get("", opsets.get("ai.onnx", 0))
    missing = []
    for node in model.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        if registry.lookup(domain, node.op_type, opsets.get(domain, default)) is None:
            missing.append(node.op_type if not domain else f"{domain}::{node.op_type}")
    return sorted(set(missing))


def _case_names() -> list[str]:
    return [c.name for c in node_cases()]


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if not _outcomes:
        return
    skipped = {k: v for k, v in _outcomes.items() if k != "passed" and k != "failed"}
    ran = _outcomes["passed"] + _outcomes["failed"]
    lines = [f"ONNX backend node cases: {ran} run, {_outcomes['passed']} passed,"
             f" {_outcomes['failed']} failed, {sum(skipped.values())} skipped;"
             f" {_outcomes['passed'] / TOTAL_CASES:.1%} of all {TOTAL_CASES} passed"]
    lines += [f"  skipped {n:4d}  {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1])]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


def _skip(reason: str):
    _outcomes[reason] += 1
    pytest.skip(reason)


def _reason_of_unreadable(error: ModelFormatError) -> str:
    message = str(error)
    found = re.search(r"has type (\w+)", message) or re.search(r"element type (\w+)", message)
    return f"unsupported type: {found.group(1)}" if found else f"unreadable: {message}"


@pytest.mark.parametrize("name", _case_names())
def test_node_case(name):
    case = next(c for c in node_cases() if c.name == name)
    missing = _unsupported_ops(case.model)
    if missing:
        _skip(f"unsupported op: {', '.join(missing)}")
    try:
        model = read_onnx(case.model)
    except ModelFormatError as e:
        _skip(_reason_of_unreadable(e))
    if name not in KNOWN_FAILURES:
        _outcomes["failed"] += 1  # until it gets to the end
        _run_and_compare(case, model)
        _outcomes["failed"] -= 1
        _outcomes["passed"] += 1
        return
    try:
        _run_and_compare(case, model)
    except Exception:
        _skip(f"known failure: {KNOWN_FAILURES[name]}")
    pytest.fail(f"{name} passes now: remove it from KNOWN_FAILURES")


def _run_and_compare(case, model) -> None:
    session = load(mkb.write(model))
    feed_names = [i.name for i in case.model.graph.input
                  if i.name not in {t.name for t in case.model.graph.initializer}]
    output_names = [o.name for o in case.model.graph.output]
    for inputs, expected in case.data_sets:
        feeds = {n: _as_array(v) for n, v in zip(feed_names, inputs)}
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            got = session.run(feeds)
        assert_outputs_match(case, [got[n] for n in output_names], [_as_array(e) for e in expected])
