"""The ONNX backend node test cases, loaded once per process, and a direct single-node runner.

`node_cases()` builds onnx's 1,884 node cases in memory (about ten seconds, cached);
`run_single_node(case, lookup)` runs a one-node case's kernel straight from the registry and
`assert_outputs_match(case, outputs, expected)` compares with the onnx runner's own tolerances.

Example:
    >>> from modelkit.edge_runtime.kernels import lookup
    >>> case = case_by_name("test_relu")
    >>> for outputs, expected in run_single_node(case, lookup):
    ...     assert_outputs_match(case, outputs, expected)
"""

from __future__ import annotations

import functools
import warnings

import numpy as np


@functools.cache
def node_cases() -> tuple:
    """Every ONNX backend node TestCase (`.name`, `.model`, `.data_sets`, `.rtol`, `.atol`)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():  # the case generators overflow casts on purpose
        warnings.simplefilter("ignore")
        return tuple(load_model_tests(kind="node"))


def case_by_name(name: str):
    """The node case called `name`, e.g. "test_relu"."""
    return next(c for c in node_cases() if c.name == name)


def single_node(case):
    """The NodeProto of a case whose graph is exactly one node, else None."""
    nodes = case.model.graph.node
    return nodes[0] if len(nodes) == 1 else None


def single_node_cases(op_types) -> list:
    """The one-node cases whose op (default domain) is in `op_types`, sorted by name."""
    wanted = set(op_types)
    return sorted((c for c in node_cases()
                   if (n := single_node(c)) is not None and n.domain in ("", "ai.onnx")
                   and n.op_type in wanted), key=lambda c: c.name)


def node_attributes(node) -> dict:
    """A node's attributes as Python values: strings decoded, tensors as numpy arrays."""
    from onnx import helper, numpy_helper

    attrs = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        elif attribute.type == attribute.TENSOR:
            value = numpy_helper.to_array(value)
        attrs[attribute.name] = value
    return attrs


def opset_of(model, domain: str = "") -> int:
    """The opset the model imports for `domain` ("" and "ai.onnx" are the same domain)."""
    domains = ("", "ai.onnx") if domain in ("", "ai.onnx") else (domain,)
    return next(o.version for o in model.opset_import if o.domain in domains)


def tensor_element_types(values) -> set:
    """ONNX element type names (e.g. "FLOAT8E4M3FN") of graph values (`graph.input`,
    `graph.output`); "" for a value that is not a plain tensor (a sequence, an optional, ...)."""
    from onnx import TensorProto

    return {TensorProto.DataType.Name(v.type.tensor_type.elem_type)
            if v.type.HasField("tensor_type") else "" for v in values}


def _as_array(value):
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else value


def _to_numpy(value):
    if isinstance(value, (list, tuple)):
        return [_to_numpy(v) for v in value]
    return value.get() if hasattr(value, "get") else value  # cupy array -> numpy


def run_single_node(case, lookup, xp=np) -> list:
    """Run a one-node case through `lookup(domain, op_type, opset).fn` on array module `xp`.

    Returns one `(outputs, expected)` pair of lists per data set, both in graph-output order and
    as numpy arrays (cupy results are copied back to the host).
    Raises LookupError when no kernel is registered for the node's op at the case's opset.
    """
    node = single_node(case)
    graph = case.model.graph
    entry = lookup(node.domain, node.op_type, opset_of(case.model, node.domain))
    if entry is None:
        raise LookupError(f"no kernel for {node.op_type} at opset {opset_of(case.model)}")
    attrs = node_attributes(node)
    if entry.wants_n_outputs:
        attrs["n_outputs"] = len(node.output)
    results = []
    for inputs, expected in case.data_sets:
        feeds = {i.name: _as_array(v) for i, v in zip(graph.input, inputs)}
        if xp is not np:
            feeds = {name: xp.asarray(v) if isinstance(v, np.ndarray) else v
                     for name, v in feeds.items()}
        args = [feeds[name] if name else None for name in node.input]
        produced = dict(zip(node.output, entry.fn(xp, *args, **attrs)))
        outputs = [_to_numpy(produced[o.name]) for o in graph.output]
        results.append((outputs, [_as_array(e) for e in expected]))
    return results


def assert_outputs_match(case, outputs, expected) -> None:
    """Compare like onnx's backend runner: same count, shapes, dtypes; allclose(rtol, atol)."""
    from onnx.backend.test.runner import Runner

    outputs = [o if isinstance(o, (list, tuple)) else np.asarray(o) for o in outputs]
    Runner.assert_similar_outputs(expected, outputs,
                                  rtol=case.rtol, atol=case.atol)
