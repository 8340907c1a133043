"""Graph passes run by `export` before writing: each takes a `Graph` and returns how many rewrites
it made; `optimize` runs them all in order. Each keeps the model's outputs within 1e-5 relative
(tests/exporter/test_passes.py runs the edge runtime before and after each one).

Example:
    >>> import numpy as np
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", (2,))
    >>> y = g.add_node("Identity", [x]).outputs[0]; z = g.add_node("Relu", [y], ["z"]).outputs[0]
    >>> z.dtype, z.shape = "float32", (2,); g.outputs.append(z)
    >>> optimize(g, 17)["remove_identities"], [n.op_type for n in g.nodes]
    (1, ['Relu'])
"""

from __future__ import annotations

from modelkit.exporter.ir import Graph
from modelkit.exporter.passes.batchnorm_folding import fold_conv_batchnorm, fold_linear_batchnorm
from modelkit.exporter.passes.cleanup import remove_dead_nodes, remove_identities
from modelkit.exporter.passes.constant_folding import fold_constants

# (name, pass(graph, opset) -> rewrites), in the order `optimize` runs them
PASSES = (
    ("fold_constants", fold_constants),
    ("remove_identities", lambda graph, opset: remove_identities(graph)),
    ("fold_conv_batchnorm", lambda graph, opset: fold_conv_batchnorm(graph)),
    ("fold_linear_batchnorm", lambda graph, opset: fold_linear_batchnorm(graph)),
    ("remove_dead_nodes", lambda graph, opset: remove_dead_nodes(graph)),
)


def optimize(graph: Graph, opset: int) -> dict[str, int]:
    """Run every pass of `PASSES` on `graph` in place; returns rewrites per pass."""
    return {name: run(graph, opset) for name, run in PASSES}
