"""modelkit.exporter: the tracer and `export` (model -> `ir.Graph` -> passes -> `.onnx` / `.mkb`),
the graph IR (`ir.Graph`) and its writers (`onnx_writer`, `mkb_writer`).

Example:
    >>> from modelkit.exporter import Graph
    >>> Graph().opsets
    {'': 17}
"""

from modelkit.exporter.errors import ExportError, TracerWarning
from modelkit.exporter.export import export
from modelkit.exporter.ir import Graph, Node, Value

__all__ = ["ExportError", "Graph", "Node", "TracerWarning", "Value", "export"]
