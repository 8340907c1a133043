"""Convert between `.onnx` and `.mkb` by file suffix, optionally optimizing and quantizing.

Example:
    >>> import os, tempfile, numpy as np
    >>> from modelkit.exporter import onnx_writer
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", ("n", 3))
    >>> w = g.add_initializer("w", np.ones((3, 2), np.float32))
    >>> y = g.add_node("MatMul", [x, w], ["y"]).outputs[0]; y.dtype, y.shape = "float32", ("n", 2)
    >>> g.outputs.append(y)
    >>> folder = tempfile.mkdtemp(); onnx_writer.save(g, os.path.join(folder, "m.onnx"))
    >>> result = convert(os.path.join(folder, "m.onnx"), os.path.join(folder, "m.mkb"))
    >>> result.destination.endswith("m.mkb"), result.bytes_after > 0
    (True, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from modelkit.converters import mkb_import, onnx_import
from modelkit.converters.errors import ConversionError
from modelkit.converters.quantize import QuantizationReport, quantize as quantize_graph, to_onnx_nodes
from modelkit.exporter import mkb_writer, onnx_writer
from modelkit.exporter.ir import Graph
from modelkit.exporter.passes import optimize as optimize_graph

SUFFIXES = (".onnx", ".mkb")


class UnknownSuffixError(ConversionError):
    """A path whose suffix names no model format modelkit reads or writes."""


@dataclass
class ConversionResult:
    """What `convert` did: paths, file sizes, rewrites per optimization pass, quantization."""

    source: str
    destination: str
    bytes_before: int
    bytes_after: int
    passes: dict[str, int] = field(default_factory=dict)
    quantization: Optional[QuantizationReport] = None
    node_count: int = 0


def model_format(path) -> str:
    """"onnx" or "mkb" from the suffix of `path`; UnknownSuffixError for any other suffix.

    Example:
        >>> model_format("net.ONNX"), model_format("net.mkb")
        ('onnx', 'mkb')
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in SUFFIXES:
        raise UnknownSuffixError(f"{os.fspath(path)}: unknown model suffix {suffix or '(none)'!r}; "
                              "expected .onnx or .mkb")
    return suffix[1:]


def load_graph(path) -> Graph:
    """Read an `.onnx` or `.mkb` file into a `Graph` (by suffix).

    Example:
        >>> load_graph("missing.onnx")
        Traceback (most recent call last):
        ...
        FileNotFoundError: missing.onnx: no such file
    """
    kind = model_format(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such file")
    return onnx_import.load(os.fspath(path)) if kind == "onnx" else mkb_import.load(os.fspath(path))


def save_graph(graph: Graph, path, opset: Optional[int] = None) -> None:
    """Write `graph` as `.onnx` or `.mkb` (by suffix). For ONNX, quantized weights become
    DequantizeLinear / Cast nodes, and `opset` converts the graph with onnx's version converter.

    Example: see the module docstring.
    """
    if model_format(path) == "mkb":
        mkb_writer.save(graph, path)
        return
    to_onnx_nodes(graph)
    if opset is not None and opset != graph.opsets.get("", opset):
        graph = _with_opset(graph, opset)
    onnx_writer.save(graph, path)


def convert(source, destination, *, quantize: Optional[str] = None, optimize: bool = True,
            opset: Optional[int] = None) -> ConversionResult:
    """Read `source`, run the exporter's passes (`optimize`), quantize the weights ("int8" or
    "fp16"), and write `destination`; the formats come from the suffixes.

    Example: see the module docstring.
    """
    model_format(destination)
    graph = load_graph(source)
    passes = _optimized(graph) if optimize else {}
    report = quantize_graph(graph, quantize) if quantize else None
    save_graph(graph, destination, opset)
    return ConversionResult(os.fspath(source), os.fspath(destination), file_bytes(source),
                            file_bytes(destination), passes, report, len(graph.nodes))


def _optimized(graph: Graph) -> dict[str, int]:
    """Run the exporter's passes at the graph's default-domain opset."""
    return optimize_graph(graph, graph.opsets.get("", 17))


def file_bytes(path) -> int:
    """Size of a model file, including an ONNX external-data file beside it.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "m.mkb"); _ = open(path, "wb").write(b"12")
        >>> file_bytes(path)
        2
    """
    path = os.fspath(path)
    data = path + ".data"
    return os.path.getsize(path) + (os.path.getsize(data) if os.path.isfile(data) else 0)


def _with_opset(graph: Graph, opset: int) -> Graph:
    from onnx import version_converter

    try:
        proto = version_converter.convert_version(onnx_writer.to_proto(graph), opset)
    except Exception as error:  # noqa: BLE001  (onnx raises bare RuntimeError/ValueError)
        raise ConversionError(f"cannot convert the graph from opset {graph.opsets.get('')} to "
                              f"opset {opset}: {error}") from error
    return onnx_import.load(proto)
