"""The conversion check behind `modelkit check`: run every path a model can take (authoring eager,
onnxruntime on ONNX, the edge runtime on `.mkb`, a quantized `.mkb`) on the same inputs, compare
each output with the reference, and when they disagree, find the first node whose intermediate
output differs between the edge runtime and onnxruntime on the same graph.

Example:
    >>> import os, tempfile, numpy as np
    >>> from modelkit.exporter import onnx_writer
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", ("n", 2))
    >>> y = g.add_node("Relu", [x], ["y"]).outputs[0]; y.dtype, y.shape = "float32", ("n", 2)
    >>> g.outputs.append(y); path = os.path.join(tempfile.mkdtemp(), "relu.onnx")
    >>> onnx_writer.save(g, path)
    >>> report = check(path); report.passed, [(c.path, c.output) for c in report.comparisons]
    (True, [('edge runtime', 'y')])
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from modelkit.converters.convert import load_graph, model_format
from modelkit.converters.feeds import random_feeds
from modelkit.converters.quantize import quantize as quantize_graph, to_onnx_nodes
from modelkit.edge_runtime import EdgeRuntimeError, InvalidInputError, Session, TensorSpec
from modelkit.edge_runtime.format.model import ValueInfo
from modelkit.exporter import mkb_writer, onnx_writer
from modelkit.exporter.ir import Graph

DEFAULT_RTOL, DEFAULT_ATOL = 1e-4, 1e-5
# A quantized model is judged by its predictions: its top-1 must agree with the reference on
# this fraction of the inputs; an output without a top-1 may differ by this fraction of its peak.
MIN_TOP1_AGREEMENT = 0.99
QUANTIZED_PEAK_FRACTION = 0.05
LABELS_KEY = "labels"


@dataclass
class Comparison:
    """One output of one path against the reference."""

    path: str
    output: str
    max_abs: float
    max_rel: float
    passed: bool
    top1_agreement: Optional[float] = None
    accuracy_change: Optional[float] = None  # percentage points, when labels were given
    error: str = ""  # why the path produced no output at all


@dataclass
class Divergence:
    """The first node whose output differs between the edge runtime and onnxruntime."""

    node: str
    op_type: str
    output: str
    max_abs: float
    max_rel: float
    source: str = ""
    module: str = ""

    def describe(self) -> str:
        where = " ".join(filter(None, (self.source and f"at {self.source}",
                                       self.module and f"(module {self.module})")))
        return (f"first divergent node: {self.node!r} ({self.op_type}){' ' + where if where else ''}"
                f": output {self.output!r} max abs error {self.max_abs:.3g}, max rel error "
                f"{self.max_rel:.3g}, while all of its inputs agree")


@dataclass
class CheckReport:
    """Every comparison, the first divergent node when a path disagreed, and the settings."""

    model: str
    reference: str
    inputs: dict[str, tuple]
    rtol: float
    atol: float
    comparisons: list[Comparison] = field(default_factory=list)
    divergence: Optional[Divergence] = None
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def table(self) -> str:
        """The report as text: one row per path and output.

        Example: `print(check("model.onnx").table())`.
        """
        shapes = ", ".join(f"{k} {list(v)}" for k, v in self.inputs.items())
        lines = [f"check {self.model}: reference {self.reference}, inputs {shapes}, "
                 f"rtol {self.rtol:g}, atol {self.atol:g}"]
        rows = [("path", "output", "max abs", "max rel", "top-1", "result")]
        for c in self.comparisons:
            top1 = "" if c.top1_agreement is None else f"{c.top1_agreement:.1%}"
            verdict = "ok" if c.passed else ("ERROR" if c.error else "MISMATCH")
            if c.accuracy_change is not None:
                verdict += f" (accuracy {c.accuracy_change:+.2f} pt)"
            if c.error:
                rows.append((c.path, c.output, "-", "-", top1, f"{verdict}: {c.error}"))
            else:
                rows.append((c.path, c.output, f"{c.max_abs:.3g}", f"{c.max_rel:.3g}", top1, verdict))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1]
                  for r in rows]
        if self.divergence is not None:
            lines.append(self.divergence.describe())
        if self.note:
            lines.append(self.note)
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)

    def write_junit(self, path) -> None:
        """Write the report as JUnit XML: one test case per path and output.

        Example: `check("model.onnx").write_junit("report.xml")`.
        """
        name = os.path.basename(self.model)
        suite = ET.Element("testsuite", name="modelkit check", tests=str(len(self.comparisons)),
                           failures=str(sum(not c.passed and not c.error for c in self.comparisons)),
                           errors=str(sum(bool(c.error) for c in self.comparisons)))
        for c in self.comparisons:
            case = ET.SubElement(suite, "testcase", classname=f"modelkit.check.{name}",
                                 name=f"{c.path}: {c.output}")
            if c.passed:
                continue
            kind = "error" if c.error else "failure"
            message = c.error or (f"max abs error {c.max_abs:.3g}, max rel error {c.max_rel:.3g} "
                                  f"against {self.reference} (rtol {self.rtol:g}, atol {self.atol:g})")
            failure = ET.SubElement(case, kind, message=message,
                                    type="error" if c.error else "mismatch")
            failure.text = self.table()
        root = ET.Element("testsuites")
        root.append(suite)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def check(source, *, inputs: Optional[dict] = None, rtol: float = DEFAULT_RTOL,
          atol: float = DEFAULT_ATOL, quantize: Optional[str] = None,
          dims: Optional[dict[str, int]] = None) -> CheckReport:
    """Check that every path of `source` (a model.py, `.onnx` or `.mkb`) gives the reference's
    outputs on `inputs` (name -> array; default: the model.py's example inputs, else random ones
    with symbolic dims from `dims`). An array named "labels" in `inputs` gives the accuracy
    change of the quantized model.

    Example: see the module docstring.
    """
    source = os.fspath(source)
    if source.endswith(".py"):
        from modelkit.exporter import model_file

        spec = model_file.load(source)
        model, example = spec.instantiate()
        return check_model(model, example, name=source, input_names=spec.input_names,
                           output_names=spec.output_names, dynamic_axes=spec.dynamic_axes,
                           inputs=inputs, rtol=rtol, atol=atol, quantize=quantize)
    inputs = dict(inputs or {})
    labels = inputs.pop(LABELS_KEY, None)
    with tempfile.TemporaryDirectory(prefix="modelkit-check-") as folder:
        graph, feeds, reference, paths = _file_paths(source, inputs, dims, folder)
        report = CheckReport(source, "onnxruntime", {k: v.shape for k, v in feeds.items()},
                             rtol, atol)
        _run_paths(report, graph, feeds, reference, paths, quantize, labels, folder)
    return report


def check_model(model, example_inputs, *, name: str = "model", input_names=None,
                output_names=None, dynamic_axes=None, inputs: Optional[dict] = None,
                rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                quantize: Optional[str] = None) -> CheckReport:
    """Export an authoring model (traced on `example_inputs`) and check onnxruntime and the edge
    runtime against eager on `inputs` (default: the example inputs); see `check`.

    Example:
        >>> import numpy as np, modelkit.authoring as mk
        >>> net = mk.nn.Sequential(mk.nn.Linear(4, 3), mk.nn.ReLU())
        >>> check_model(net, (np.ones((2, 4), np.float32),)).passed
        True
    """
    inputs = dict(inputs or {})
    labels = inputs.pop(LABELS_KEY, None)
    with tempfile.TemporaryDirectory(prefix="modelkit-check-") as folder:
        graph, feeds, reference, paths = _eager_paths(
            model, example_inputs, dict(input_names=input_names, output_names=output_names,
                                        dynamic_axes=dynamic_axes), inputs, folder)
        report = CheckReport(name, "authoring eager", {k: v.shape for k, v in feeds.items()},
                             rtol, atol)
        _run_paths(report, graph, feeds, reference, paths, quantize, labels, folder)
    return report


def _run_paths(report: CheckReport, graph: Graph, feeds: dict, reference: dict, paths,
               quantize: Optional[str], labels, folder: str) -> None:
    """Fill `report`: each path against the reference, the quantized model, the divergence."""
    for name, run in paths:
        report.comparisons += _compare(name, run, feeds, reference, report.rtol, report.atol)
    if quantize:
        quantized = graph.copy()
        quantize_graph(quantized, quantize)
        target = os.path.join(folder, f"model_{quantize}.mkb")
        mkb_writer.save(quantized, target)
        report.comparisons += _compare_quantized(f"edge runtime {quantize}", _edge(target),
                                                 feeds, reference, labels)
    if any(not c.passed for c in report.comparisons if c.path in ("edge runtime", "onnxruntime")):
        report.divergence = first_divergence(graph, feeds, report.rtol, report.atol)
        if report.divergence is None:
            report.note = ("the edge runtime and onnxruntime agree on every intermediate value: "
                           f"the graph itself differs from the {report.reference} reference")


def first_divergence(graph: Graph, feeds: dict, rtol: float = DEFAULT_RTOL,
                     atol: float = DEFAULT_ATOL) -> Optional[Divergence]:
    """Run `graph` in onnxruntime and the edge runtime with every intermediate value exposed as
    an output; the first node (in topological order) whose output differs beyond tolerance, or
    None when all agree.

    Example: see tests/converters/test_check.py (a planted wrong kernel is found by name).
    """
    order = [(node, v.name) for node in graph.nodes for v in node.outputs if v is not None]
    expected = _onnxruntime_intermediates(graph, feeds, [name for _, name in order])
    model = graph.to_model()
    exposed = {v.name for v in model.outputs}
    model.outputs += [ValueInfo(name, _dtype_name(expected[name]), None)
                      for _, name in order if name in expected and name not in exposed]
    try:
        got = Session(model).run(feeds)
    except EdgeRuntimeError as error:
        return _divergence_from_error(graph, error)
    for node, name in order:
        if name not in expected or name not in got:
            continue
        max_abs, max_rel, same = _difference(got[name], expected[name], rtol, atol)
        if not same:
            return Divergence(node.name, node.op_type, name, max_abs, max_rel, node.source,
                              node.module)
    return None


# -- the paths ---------------------------------------------------------------------------------


def _eager_paths(model, example, export_options: dict, inputs: dict, folder: str):
    import modelkit.authoring as mk
    from modelkit.exporter.export import export, flat_outputs

    graph = export(model, example, **export_options)
    names = [v.name for v in graph.inputs]
    feeds = {n: np.asarray(a.numpy() if hasattr(a, "numpy") else a) for n, a in zip(names, example)}
    _refuse_unknown(inputs, names)
    feeds.update(inputs)
    with mk.no_grad():
        result = model(*[mk.tensor(feeds[n]) for n in names])
    reference = {v.name: t.numpy() for v, (_, t) in zip(graph.outputs, flat_outputs(result))}
    onnx_path, mkb_path = os.path.join(folder, "model.onnx"), os.path.join(folder, "model.mkb")
    _save_onnx(graph, onnx_path)
    mkb_writer.save(graph, mkb_path)
    return graph, feeds, reference, [("onnxruntime", _onnxruntime(onnx_path)),
                                     ("edge runtime", _edge(mkb_path))]


def _refuse_unknown(inputs: dict, names: list[str]) -> None:
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise InvalidInputError(f"the model has no input(s) {unknown}; its inputs are {names}")


def _file_paths(source: str, inputs: dict, dims, folder: str):
    graph = load_graph(source)
    if model_format(source) == "onnx":
        onnx_path, mkb_path = source, os.path.join(folder, "model.mkb")
        mkb_writer.save(graph, mkb_path)
    else:
        onnx_path, mkb_path = os.path.join(folder, "model.onnx"), source
        _save_onnx(graph, onnx_path)
    specs = [TensorSpec(v.name, v.dtype, v.shape) for v in graph.inputs if not v.is_initializer]
    _refuse_unknown(inputs, [s.name for s in specs])
    feeds = random_feeds([s for s in specs if s.name not in inputs], dims)
    feeds.update(inputs)
    reference = _onnxruntime(onnx_path)(feeds)
    return graph, feeds, reference, [("edge runtime", _edge(mkb_path))]


def _save_onnx(graph: Graph, path: str) -> None:
    copy = graph.copy()
    to_onnx_nodes(copy)
    onnx_writer.save(copy, path)


def _onnxruntime(path: str):
    def run(feeds):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, _plain_session_options(),
                                               providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    return run


def _edge(path: str):
    from modelkit import edge_runtime

    return lambda feeds: edge_runtime.load(path).run(feeds)


# -- comparing ---------------------------------------------------------------------------------


def _outputs_of(run, feeds: dict):
    try:
        return run(feeds), ""
    except Exception as error:  # noqa: BLE001  (a path that crashes is a failed check, not a crash)
        return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _compare(name: str, run, feeds: dict, reference: dict, rtol: float, atol: float):
    got, error = _outputs_of(run, feeds)
    if got is None:
        return [Comparison(name, "*", float("inf"), float("inf"), False, error=error)]
    rows = []
    for output, want in reference.items():
        if output not in got:
            rows.append(Comparison(name, output, float("inf"), float("inf"), False,
                                   error="output missing"))
            continue
        max_abs, max_rel, same = _difference(got[output], want, rtol, atol)
        rows.append(Comparison(name, output, max_abs, max_rel, same))
    return rows


def _compare_quantized(name: str, run, feeds: dict, reference: dict, labels):
    got, error = _outputs_of(run, feeds)
    if got is None:
        return [Comparison(name, "*", float("inf"), float("inf"), False, error=error)]
    rows = []
    for output, want in reference.items():
        have = got[output]
        max_abs, max_rel, _ = _difference(have, want, 0.0, 0.0)
        top1 = _top1_agreement(have, want)
        if top1 is not None:
            passed = top1 >= MIN_TOP1_AGREEMENT
        else:
            peak = float(np.abs(want.astype(np.float64)).max(initial=0.0))
            passed = max_abs <= QUANTIZED_PEAK_FRACTION * peak
        change = None
        if labels is not None and top1 is not None and len(labels) == len(want):
            change = 100.0 * (_accuracy(have, labels) - _accuracy(want, labels))
        rows.append(Comparison(name, output, max_abs, max_rel, passed, top1, change))
    return rows


def _predictions(array: np.ndarray) -> Optional[np.ndarray]:
    if array.dtype.kind == "f" and array.ndim >= 2 and array.shape[-1] > 1:
        return array.reshape(-1, array.shape[-1]).argmax(axis=-1)
    if array.dtype.kind in "iu" and array.ndim == 1:
        return array
    return None


def _top1_agreement(got: np.ndarray, want: np.ndarray) -> Optional[float]:
    a, b = _predictions(got), _predictions(want)
    if a is None or b is None or a.shape != b.shape or not a.size:
        return None
    return float(np.mean(a == b))


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(_predictions(outputs) == np.asarray(labels).reshape(-1)))


def _difference(got, want, rtol: float, atol: float) -> tuple[float, float, bool]:
    """(max abs error, max rel error, within tolerance) of `got` against `want`."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf"), float("inf"), False
    if got.dtype.kind in "OSUb" or want.dtype.kind in "OSUb":
        same = bool(np.array_equal(got, want))
        return (0.0, 0.0, True) if same else (float("inf"), float("inf"), False)
    if not got.size:
        return 0.0, 0.0, True
    g, w = got.astype(np.float64), want.astype(np.float64)
    equal = (g == w) | (np.isnan(g) & np.isnan(w))
    diff = np.where(equal, 0.0, np.abs(g - w))
    diff = np.nan_to_num(diff, nan=np.inf)
    rel = diff / np.maximum(np.abs(np.nan_to_num(w)), np.finfo(np.float64).tiny)
    same = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(w))))
    return float(diff.max()), float(rel.max()), same


def _plain_session_options():
    """onnxruntime without graph rewrites: every node computes its own output (comparable one by
    one), and DequantizeLinear + MatMul is not fused into an integer matmul that also quantizes
    the activations (which would make the reference itself approximate)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def _onnxruntime_intermediates(graph: Graph, feeds: dict, names: list[str]) -> dict:
    import onnx
    import onnxruntime

    copy = graph.copy()
    to_onnx_nodes(copy)
    proto = onnx_writer.to_proto(copy)
    exposed = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in exposed)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), _plain_session_options(),
                                           providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(outputs, feeds)))


def _dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OSU" else array.dtype.name


def _divergence_from_error(graph: Graph, error: Exception) -> Optional[Divergence]:
    message = str(error).splitlines()[0]
    for node in graph.nodes:
        if node.name and f"'{node.name}'" in message:
            return Divergence(node.name, node.op_type, "", float("inf"), float("inf"),
                              node.source, node.module)
    return None
