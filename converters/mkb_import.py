"""Import a `.mkb` file into the graph IR, so that `.mkb -> ONNX` is `onnx_writer.save(load(p))`."""

from __future__ import annotations

from modelkit.edge_runtime import format as mkb_format
from modelkit.exporter.ir import Graph


def load(source) -> Graph:
    """Read a `.mkb` file (path or bytes) into a `Graph`; weights stay views on the file.

    The reader validates the file and raises `ModelFormatError` for a malformed one.

    Example:
        >>> import os, tempfile
        >>> from modelkit.exporter import mkb_writer
        >>> g = Graph(); x = g.add_input("x", "float32", ("n",)); g.outputs.append(x)
        >>> path = os.path.join(tempfile.mkdtemp(), "identity.mkb"); mkb_writer.save(g, path)
        >>> load(path).inputs
        [Value('x', float32, ('n',))]
    """
    return Graph.from_model(mkb_format.read(source))
