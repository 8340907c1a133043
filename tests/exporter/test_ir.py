"""The graph IR: building, querying, rewriting, ordering, and conversion to/from `Model`."""

import numpy as np
import pytest

from modelkit.edge_runtime.format.model import Model, Node as PlainNode, Quantization, ValueInfo
from modelkit.exporter.errors import ExportError
from modelkit.exporter.ir import Graph, stable_topological_order


def _chain():
    """x -> Relu(a) -> Neg(b) -> Exp(c) -> output, plus an initializer w read by b."""
    g = Graph()
    x = g.add_input("x", "float32", ("batch", 3))
    w = g.add_initializer("w", np.ones(3, np.float32))
    a = g.add_node("Relu", [x], name="a")
    b = g.add_node("Add", [a.outputs[0], w], name="b")
    c = g.add_node("Exp", [b.outputs[0]], name="c")
    g.outputs.append(c.outputs[0])
    return g, x, w, a, b, c


def test_add_node_links_producer_and_uses():
    g, x, w, a, b, c = _chain()
    assert a.outputs[0].producer is a and a.outputs[0].producer_index == 0
    assert g.producer(x) is None and g.producer(b.outputs[0]) is b
    assert g.consumers(x) == [a] and g.consumers(w) == [b]
    assert a.outputs[0].uses() == [(b, 0)]
    assert w.is_initializer and w.dtype == "float32" and w.shape == (3,)
    assert [v.name for v in g.initializers] == ["w"]


def test_generated_names_are_unique_and_follow_module_paths():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    first = g.add_node("Relu", [x], module="block.0")
    second = g.add_node("Relu", [x], module="block.0")
    assert first.name == "block.0/Relu" and second.name == "block.0/Relu_1"
    assert first.outputs[0].name != second.outputs[0].name
    assert g.unique_value_name("x") == "x_1"


def test_node_used_twice_by_one_consumer_has_two_uses():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    mul = g.add_node("Mul", [x, x])
    assert x.uses() == [(mul, 0), (mul, 1)] and x.consumers() == [mul]


def test_replace_all_uses_rewires_consumers_and_graph_outputs():
    g, x, w, a, b, c = _chain()
    y = c.outputs[0]
    g.replace_all_uses(a.outputs[0], x)
    assert b.inputs[0] is x and a.outputs[0].uses() == []
    assert g.consumers(x) == [a, b]
    g.replace_all_uses(y, b.outputs[0])
    assert g.outputs == [b.outputs[0]]


def test_identity_removal_keeps_the_public_output_name():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    r = g.add_node("Relu", [x], ["r"]).outputs[0]
    ident = g.add_node("Identity", [r], ["y"])
    g.outputs.append(ident.outputs[0])
    g.replace_all_uses(ident.outputs[0], r)
    g.remove_node(ident)
    r.name = "y"
    assert [v.name for v in g.outputs] == ["y"] and g.value("y") is r
    assert "r" not in g.values


def test_remove_node_refuses_while_its_output_is_used_or_an_output():
    g, x, w, a, b, c = _chain()
    with pytest.raises(ValueError, match="still read by 'b'"):
        g.remove_node(a)
    with pytest.raises(ValueError, match="graph output"):
        g.remove_node(c)


def test_remove_node_frees_names_and_unlinks_inputs():
    g, x, w, a, b, c = _chain()
    out_name = c.outputs[0].name
    g.outputs.clear()
    g.remove_node(c)
    assert c not in g.nodes and out_name not in g.values
    assert b.outputs[0].uses() == []
    g.add_node("Exp", [b.outputs[0]], [out_name])  # the name is free again


def test_set_input_and_inputs_setter_keep_uses_right():
    g, x, w, a, b, c = _chain()
    b.set_input(1, x)
    assert w.uses() == [] and (b, 1) in x.uses()
    b.inputs = [w, None]
    assert x.consumers() == [a] and w.uses() == [(b, 0)]


def test_rename_refuses_a_taken_name():
    g, x, w, *_ = _chain()
    with pytest.raises(ValueError, match="taken"):
        x.name = "w"
    x.name = "images"
    assert g.value("images") is x and "x" not in g.values


def test_duplicate_names_are_refused():
    g = Graph()
    g.add_input("x", "float32", (2,))
    with pytest.raises(ValueError, match="'x' already exists"):
        g.add_initializer("x", np.zeros(2))


def test_value_lookup_error_names_similar_values():
    g, *_ = _chain()
    with pytest.raises(KeyError, match="similar"):
        g.value("X")


def test_inputs_from_another_graph_are_refused():
    other, x_other, *_ = _chain()
    with pytest.raises(ValueError, match="another graph"):
        Graph().add_node("Relu", [x_other])


def test_topological_sort_restores_order_and_keeps_independent_nodes_in_place():
    g, x, w, a, b, c = _chain()
    d = g.add_node("Neg", [x], name="d")  # independent of a, b, c
    g.nodes[:] = [c, d, b, a]
    g.topological_sort()
    assert [n.name for n in g.nodes] == ["d", "a", "b", "c"]


def test_topological_sort_names_the_nodes_of_a_cycle():
    g, x, w, a, b, c = _chain()
    a.set_input(0, c.outputs[0])
    with pytest.raises(ExportError, match="cycle among nodes a .*b .*c "):
        g.topological_sort()


def test_stable_topological_order_leaves_out_cycles():
    assert stable_topological_order([set(), {0}, {1}]) == [0, 1, 2]
    assert stable_topological_order([{0}]) == []
    assert stable_topological_order([set(), {2}, {1}]) == [0]


def test_add_node_before_inserts_in_place():
    g, x, w, a, b, c = _chain()
    n = g.add_node("Neg", [x], name="n", before=b)
    assert [m.name for m in g.nodes] == ["a", "n", "b", "c"]
    assert n.outputs[0].producer is n


def _plain_model():
    return Model(
        inputs=[ValueInfo("x", "float32", ("batch", 4)), ValueInfo("h", "float32", (1, "batch", 2))],
        outputs=[ValueInfo("y", "float32", ("batch", 2)), ValueInfo("x", "float32", ("batch", 4))],
        nodes=[
            PlainNode("MatMul", ["x", "w"], ["t"], name="mm", source="m.py:3", module="fc"),
            PlainNode("LSTM", ["t", "W", "R", "", "", "h"], ["", "y"], {"hidden_size": 2},
                      name="lstm", domain=""),
        ],
        initializers={"w": np.ones((4, 3), np.float32), "W": np.ones((1, 8, 3), np.float32),
                      "R": np.ones((1, 8, 2), np.float32)},
        value_info=[ValueInfo("t", "float32", ("batch", 3))],
        quantization={"w": Quantization(np.array([0.5], np.float32), np.array([0], np.int8))},
        opsets={"": 17, "my.ops": 2},
        metadata={"k": "v"},
        producer="someone",
        graph_name="net",
        memory_plan={"t": 0},
    )


def test_model_round_trip_is_exact():
    model = _plain_model()
    g = Graph.from_model(model)
    assert g.to_model() == _equal_arrays_model(model, g.to_model())
    lstm = g.nodes[1]
    assert lstm.inputs[3] is None and lstm.outputs[0] is None
    assert g.value("t").shape == ("batch", 3) and g.nodes[0].source == "m.py:3"
    assert g.value("w").quantization is model.quantization["w"]


def _equal_arrays_model(expected, actual):
    """`expected` with its arrays swapped for `actual`'s after checking they are the same arrays."""
    assert expected.initializers.keys() == actual.initializers.keys()
    for name, array in expected.initializers.items():
        assert actual.initializers[name] is array  # shared, not copied
    expected.initializers = actual.initializers
    return expected


def test_from_model_keeps_dangling_inputs_as_producerless_values():
    model = Model(inputs=[], outputs=[ValueInfo("y", "float32", (2,))],
                  nodes=[PlainNode("Relu", ["ghost"], ["y"], name="r")])
    g = Graph.from_model(model)
    ghost = g.value("ghost")
    assert ghost.producer is None and not ghost.is_initializer and ghost.consumers() == g.nodes
    assert g.to_model() == model


def test_from_model_accepts_nodes_out_of_order():
    model = Model(inputs=[ValueInfo("x", "float32", (2,))], outputs=[ValueInfo("z", "float32", (2,))],
                  nodes=[PlainNode("Neg", ["y"], ["z"], name="second"),
                         PlainNode("Relu", ["x"], ["y"], name="first")])
    g = Graph.from_model(model)
    g.topological_sort()
    assert [n.name for n in g.nodes] == ["first", "second"]


def test_to_model_needs_output_dtypes():
    g = Graph()
    x = g.add_input("x", "float32", (2,))
    g.outputs.append(g.add_node("Relu", [x], ["y"]).outputs[0])
    with pytest.raises(ExportError, match="output 'y' has no dtype"):
        g.to_model()


def test_str_shows_ops_with_source_and_module():
    g = Graph()
    x = g.add_input("x", "float32", ("n", 2))
    g.outputs.append(g.add_node("Relu", [x], ["y"], source="m.py:9", module="act").outputs[0])
    assert str(g).splitlines() == ["graph main (x: float32[n,2]) -> (y)", "  y = Relu(x)  # act m.py:9"]


def test_copy_is_independent_but_shares_weights():
    g, x, w, a, b, c = _chain()
    c.outputs[0].dtype, c.outputs[0].shape = "float32", ("batch", 3)
    dup = g.copy()
    dup.value("x").name = "renamed"
    dup.nodes[0].set_input(0, dup.value("w"))
    assert x.name == "x" and a.inputs[0] is x
    assert [n.name for n in dup.nodes] == ["a", "b", "c"]
    assert dup.value("w").data is w.data
