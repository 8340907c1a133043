"""The `.mkb` model file: plain-data `Model`, `write` and `read` (schema: modelkit.fbs).

Example:
    >>> from modelkit.edge_runtime.format import Model, Node, ValueInfo, read, write
    >>> m = Model([ValueInfo("x", "float32", (1,))], [ValueInfo("y", "float32", (1,))],
    ...           [Node("Neg", ["x"], ["y"])])
    >>> read(write(m)).nodes[0].op_type
    'Neg'
"""

from modelkit.edge_runtime.format.model import (
    DTYPES, Model, Node, Quantization, TestVector, ValueInfo,
)
from modelkit.edge_runtime.format.reader import FORMAT_VERSION, read
from modelkit.edge_runtime.format.writer import write

__all__ = ["DTYPES", "FORMAT_VERSION", "Model", "Node", "Quantization", "TestVector",
           "ValueInfo", "read", "write"]
