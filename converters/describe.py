"""What a model file holds, for `modelkit inspect`: format, producer, opsets, inputs and outputs,
op histogram, parameter count, weight bytes by dtype, quantization and metadata. Works on models
the runtime cannot run (unsupported ops): it only reads the file.

Example:
    >>> import os, tempfile, numpy as np
    >>> from modelkit.edge_runtime import format as mkb
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> m = Model([ValueInfo("x", "float32", ("n", 2))], [ValueInfo("y", "float32", ("n", 3))],
    ...           [Node("MatMul", ["x", "w"], ["y"])], initializers={"w": np.ones((2, 3), np.float32)})
    >>> path = os.path.join(tempfile.mkdtemp(), "m.mkb"); mkb.write(m, path)
    >>> info = describe(path); info["parameters"], info["ops"], info["weight_bytes"]
    (6, {'MatMul': 1}, {'float32': 24})
"""

from __future__ import annotations

import os
from collections import Counter

from modelkit.converters.convert import file_bytes, model_format
from modelkit.edge_runtime.format.model import Model


def describe(path) -> dict:
    """A JSON-ready dict describing the model file at `path` (`.onnx` or `.mkb`).

    Example: see the module docstring.
    """
    path = os.fspath(path)
    kind = model_format(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    model, header = _read_onnx(path) if kind == "onnx" else _read_mkb(path)
    initializers = model.initializers
    weight_bytes = Counter()
    for array in initializers.values():
        weight_bytes[array.dtype.name if array.dtype.kind not in "OSU" else "string"] += array.nbytes
    return {
        "path": path,
        **header,
        "file_bytes": file_bytes(path),
        "producer": model.producer,
        "graph": model.graph_name,
        "opsets": dict(sorted(model.opsets.items())),
        "inputs": [_io(v) for v in model.inputs if v.name not in initializers],
        "outputs": [_io(v) for v in model.outputs],
        "nodes": len(model.nodes),
        "ops": dict(Counter(_op(n) for n in model.nodes).most_common()),
        "parameters": int(sum(a.size for a in initializers.values())),
        "weight_bytes": dict(weight_bytes.most_common()),
        "quantized": {name: {"dtype": initializers[name].dtype.name,
                             "axis": q.axis, "scales": int(q.scale.size)}
                      for name, q in sorted(model.quantization.items()) if name in initializers},
        "metadata": dict(model.metadata),
    }


def _read_onnx(path: str) -> tuple[Model, dict]:
    import onnx

    from modelkit.edge_runtime.format.onnx_reader import read_onnx

    proto = onnx.load(path, load_external_data=False)
    header = {"format": "onnx", "format_version": f"IR {proto.ir_version}",
              "producer_version": proto.producer_version}
    return read_onnx(path), header


def _read_mkb(path: str) -> tuple[Model, dict]:
    from modelkit.edge_runtime import format as mkb
    from modelkit.edge_runtime.format.modelkit_generated import ModelFile

    model = mkb.read(path)  # validates the whole file before the header is trusted below
    with open(path, "rb") as f:
        root = ModelFile.GetRootAs(f.read(), 0)
    header = {"format": "mkb", "format_version": f"{root.FormatMajor()}.{root.FormatMinor()}",
              "min_runtime_version": (root.MinRuntimeVersion() or b"").decode()}
    return model, header


def _io(value) -> dict:
    shape = None if value.shape is None else list(value.shape)
    return {"name": value.name, "dtype": value.dtype, "shape": shape}


def _op(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
