"""Write a `Graph` as a `.mkb` file through the shared plain-data `Model`."""

from __future__ import annotations

from modelkit.edge_runtime import format as mkb_format
from modelkit.exporter.ir import Graph


def save(graph: Graph, path) -> None:
    """Write the graph to `path` as a `.mkb` file (byte-identical for an identical graph).

    Example:
        >>> import os, tempfile
        >>> g = Graph(); x = g.add_input("x", "float32", (2,)); g.outputs.append(x)
        >>> path = os.path.join(tempfile.mkdtemp(), "identity.mkb"); save(g, path)
        >>> os.path.getsize(path) > 0
        True
    """
    mkb_format.write(graph.to_model(), path)
