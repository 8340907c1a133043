"""Clean-up passes: Identity (and inference Dropout) removal, dead-node and unused-weight removal.

Example:
    >>> from modelkit.exporter.ir import Graph
    >>> g = Graph(); x = g.add_input("x", "float32", (2,))
    >>> _ = g.add_node("Relu", [x]); y = g.add_node("Neg", [x], ["y"]).outputs[0]
    >>> y.dtype, y.shape = "float32", (2,); g.outputs.append(y)
    >>> remove_dead_nodes(g), [n.op_type for n in g.nodes]
    (1, ['Neg'])
"""

from __future__ import annotations

from modelkit.exporter.ir import Graph, Node, Value


def _passes_through(graph: Graph, node: Node) -> bool:
    if node.op_type == "Identity":
        return True
    # inference-mode Dropout (no training_mode input, mask unused) is an identity
    return (node.op_type == "Dropout" and len(node.inputs) < 3
            and all(v is None or (not v.uses() and v not in graph.outputs)
                    for v in node.outputs[1:]))


def remove_identities(graph: Graph) -> int:
    """Bypass Identity nodes; one that names a graph output keeps it unless its input can take
    the output's name. Returns how many were removed."""
    removed = 0
    for node in list(graph.nodes):
        if node.domain or not _passes_through(graph, node):
            continue
        source, out = node.inputs[0], node.outputs[0]
        is_output = out in graph.outputs
        if is_output and (source.producer is None or source in graph.outputs):
            continue
        graph.replace_all_uses(out, source)
        graph.remove_node(node)
        if is_output:
            take_output_place(source, out)
        removed += 1
    return removed


def take_output_place(value: Value, output: Value) -> None:
    """`value` becomes graph output `output` (already swapped in by `replace_all_uses`): it takes
    the output's name and its declared dtype and shape, which an intermediate value of an imported
    file often lacks and the writers need (a declared symbolic dim wins over a concrete one).

    Example:
        >>> v, out = Value("h", None, None), Value("y", "float32", ("batch", 3))
        >>> take_output_place(v, out); v
        Value('y', float32, ('batch', 3))
    """
    value.name = output.name
    value.dtype = output.dtype or value.dtype
    value.shape = output.shape if output.shape is not None else value.shape


def remove_dead_nodes(graph: Graph) -> int:
    """Remove nodes whose outputs nothing reads, then weights nothing reads; returns the count."""
    removed = 0
    for node in reversed(list(graph.nodes)):
        if all(v is None or (not v.uses() and v not in graph.outputs) for v in node.outputs):
            graph.remove_node(node)
            removed += 1
    for value in graph.initializers:
        if not value.uses() and value not in graph.outputs:
            graph.remove_value(value)
            removed += 1
    return removed
