"""Import an ONNX model (opsets 13 and up) into the graph IR, checking it on the way in.

Every problem the edge runtime could not get past (an op without a kernel, a value nothing
produces, a cycle, a value produced twice) is collected and raised as one `ConversionError`
whose `problems` lists them all with node names. Nodes that are merely out of topological order
are put in order, as onnxruntime does.
"""

from __future__ import annotations

from modelkit.converters.errors import ConversionError
from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format.model import Model
from modelkit.edge_runtime.format.onnx_reader import read_onnx
from modelkit.edge_runtime.graph_check import graph_problems
from modelkit.exporter.ir import Graph, stable_topological_order

MIN_OPSET = 13


def load(source) -> Graph:
    """Read an ONNX model (path, bytes or `onnx.ModelProto`) into a `Graph`.

    External-data files are read relative to the model's folder when `source` is a path.

    Example:
        >>> from onnx import TensorProto, helper
        >>> g = helper.make_graph(
        ...     [helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
        >>> load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).nodes
        [Node('Relu', name='r')]
    """
    try:
        model = read_onnx(source)
    except ModelFormatError as e:
        raise ConversionError(f"cannot read the ONNX model: {e}", [str(e)]) from e
    opset = model.opsets.get("")
    if opset is not None and opset < MIN_OPSET:
        problem = (f"the model uses ONNX opset {opset}; modelkit imports opset {MIN_OPSET} and up "
                   f"(upgrade it with onnx.version_converter.convert_version(model, {MIN_OPSET}))")
        raise ConversionError(problem, [problem])
    model.nodes = _topologically_ordered(model)
    problems = graph_problems(model)
    if problems:
        listing = "\n  ".join(problems)
        raise ConversionError(f"the ONNX model has {len(problems)} problem(s):\n  {listing}", problems)
    return Graph.from_model(model)


def _topologically_ordered(model: Model) -> list:
    """The nodes in a topological order close to the file's, or as they are if that is impossible
    (a cycle, a value produced twice) so that `graph_problems` reports it against the file."""
    producer = {}
    for i, node in enumerate(model.nodes):
        for out in node.outputs:
            if out:
                if out in producer:
                    return model.nodes
                producer[out] = i
    predecessors = [{producer[name] for name in node.inputs if name in producer}
                    for node in model.nodes]
    order = stable_topological_order(predecessors)
    if len(order) < len(model.nodes):
        return model.nodes
    return [model.nodes[i] for i in order]
