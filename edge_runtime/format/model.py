"""The model as plain data: what a `.mkb` file holds, independent of FlatBuffers.

`format.write(model, path)` serialises a `Model`; `format.read(path)` gives one back with the
weights as read-only numpy views on the mapped file. The edge runtime's `Session` executes a
`Model`; the exporter's IR converts to and from it. Tensors are referred to by name, as in ONNX;
the file itself stores indices into its tensor table, which the reader turns back into names.
An empty string in `Node.inputs` marks an omitted optional input (ONNX's convention).

Example:
    >>> import numpy as np
    >>> m = Model(
    ...     inputs=[ValueInfo("x", "float32", ("batch", 4))],
    ...     outputs=[ValueInfo("y", "float32", ("batch", 4))],
    ...     nodes=[Node("Relu", ["x"], ["y"])],
    ... )
    >>> m.opsets
    {'': 17}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

Dim = Union[int, str]
"""A dimension: a non-negative int, or a name for a symbolic (dynamic) dimension."""

DTYPES = (
    "float32", "float64", "float16", "bfloat16",
    "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "bool", "string",
)
"""Element types a tensor may have, spelled as numpy spells them ("bfloat16" has no numpy dtype)."""


@dataclass(frozen=True)
class ValueInfo:
    """Name, element type and shape of a graph input, output or intermediate value.

    `shape` is None when even the rank is unknown.
    """

    name: str
    dtype: str
    shape: Optional[tuple[Dim, ...]] = ()


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a stored tensor: real = (q - zero_point) * scale.

    `axis` is None for per-tensor parameters, else the axis the per-channel arrays run along.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: Optional[int] = None


@dataclass
class Node:
    """One operator application, in ONNX semantics.

    `attrs` values are int, float, str, bytes, lists of int/float/str, or numpy arrays (tensor
    attributes such as Constant's `value`). `source` is the user's "file.py:line" and `module`
    the module path ("features.0") that produced the node, both empty when unknown.
    """

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    source: str = ""
    module: str = ""


@dataclass
class TestVector:
    """Inputs and expected outputs stored in a file so it can check itself."""

    __test__ = False  # not a pytest test class

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


@dataclass
class Model:
    """A whole model: graph, weights, opsets and metadata. Nodes are in topological order."""

    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    nodes: list[Node]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    value_info: list[ValueInfo] = field(default_factory=list)
    quantization: dict[str, Quantization] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=lambda: {"": 17})
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = "modelkit"
    graph_name: str = "main"
    memory_plan: Optional[dict[str, int]] = None
    test_vectors: list[TestVector] = field(default_factory=list)
