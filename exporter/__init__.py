"""modelkit.exporter: the graph IR (`ir.Graph`) and its writers (`onnx_writer`, `mkb_writer`).

Example:
    >>> from modelkit.exporter import Graph
    >>> Graph().opsets
    {'': 17}
"""

from modelkit.exporter.ir import Graph, Node, Value

__all__ = ["Graph", "Node", "Value"]
