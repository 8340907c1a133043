"""The graph IR: a mutable ONNX-semantics graph that a tracer appends to and passes rewrite.

A `Graph` owns `Value`s (tensors: graph inputs, initializers holding their array in `data`, node
outputs) and `Node`s (ONNX op type, domain, attributes by ONNX name, the user's source location
and module path). Nodes hold their input and output `Value` objects, and every value knows its
producer and its uses, so a pass asks `value.producer` / `value.consumers()` instead of scanning,
and rewires with `graph.replace_all_uses(old, new)`. `None` stands for an omitted optional input
or output (ONNX's empty name).

Dtypes are spelled as `modelkit.edge_runtime.format.model.DTYPES` spells them; shapes are tuples
of ints and names of symbolic dims, or None when even the rank is unknown. Opsets live in
`graph.opsets` ({domain: version}, "" for ONNX). `Graph.from_model` / `graph.to_model()` convert
to and from the shared plain-data `Model` that the `.mkb` writer and the edge runtime use.

Example:
    >>> import numpy as np
    >>> g = Graph()
    >>> x = g.add_input("x", "float32", ("batch", 3))
    >>> w = g.add_initializer("fc.weight", np.ones((3, 2), np.float32))
    >>> y = g.add_node("MatMul", [x, w], module="fc", source="model.py:7").outputs[0]
    >>> r = g.add_node("Relu", [y]).outputs[0]
    >>> g.outputs.append(r)
    >>> print(g)
    graph main (x: float32[batch,3]) -> (Relu_output_0)
      fc/MatMul_output_0 = MatMul(x, fc.weight)  # fc model.py:7
      Relu_output_0 = Relu(fc/MatMul_output_0)
"""

from __future__ import annotations

import heapq
from types import MappingProxyType
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from modelkit.edge_runtime.format import model as plain
from modelkit.exporter.errors import ExportError

Dim = Union[int, str]
Shape = Optional[tuple[Dim, ...]]


def dtype_name(array: np.ndarray) -> str:
    """The element type of `array` as the IR spells it ("string" for numpy's bytes/str/object).

    Example:
        >>> dtype_name(np.zeros(2, np.int64)), dtype_name(np.array([b"a"], object))
        ('int64', 'string')
    """
    kind = array.dtype.kind
    return "string" if kind in "OSU" else array.dtype.name


class Value:
    """A tensor: graph input, initializer (`data` is its array) or output of `producer`.

    Rename with `value.name = "new"`; the graph keeps names unique and refuses a taken one.
    """

    def __init__(self, name: str, dtype: Optional[str] = None, shape: Shape = None,
                 data: Optional[np.ndarray] = None):
        self._name = name
        self.dtype = dtype
        self.shape = None if shape is None else tuple(shape)
        self.data = data
        self.quantization: Optional[plain.Quantization] = None
        self.producer: Optional[Node] = None
        self.producer_index: int = -1
        self._uses: dict[tuple[Node, int], None] = {}  # ordered set of (consumer, input index)
        self._graph: Optional[Graph] = None

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, new: str) -> None:
        if self._graph is not None:
            self._graph._rename_value(self, new)
        self._name = new

    @property
    def is_initializer(self) -> bool:
        return self.data is not None

    def uses(self) -> list[tuple["Node", int]]:
        """(consumer node, input index) for every input slot that reads this value.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> _ = g.add_node("Mul", [x, x], name="square"); x.uses()
            [(Node('Mul', name='square'), 0), (Node('Mul', name='square'), 1)]
        """
        return list(self._uses)

    def consumers(self) -> list["Node"]:
        """Distinct nodes that read this value, in the order their uses were made.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> _ = g.add_node("Mul", [x, x], name="square"); x.consumers()
            [Node('Mul', name='square')]
        """
        return list(dict.fromkeys(node for node, _ in self._uses))

    def __repr__(self) -> str:
        return f"Value({self._name!r}, {self.dtype}, {self.shape})"


class Node:
    """One operator application. Inputs and outputs are `Value`s (None: omitted optional).

    Replace inputs with `node.inputs = [...]` or `node.set_input(i, value)` so that the
    values' use lists stay right; `attrs` is a plain dict of ONNX attributes by name.
    """

    def __init__(self, op_type: str, inputs: Sequence[Optional[Value]], outputs: Sequence[Optional[Value]],
                 attrs: Optional[dict[str, Any]] = None, *, name: str = "", domain: str = "",
                 source: str = "", module: str = ""):
        self.op_type = op_type
        self.domain = domain
        self.name = name
        self.attrs = dict(attrs or {})
        self.source = source
        self.module = module
        self._inputs: list[Optional[Value]] = list(inputs)
        self._outputs: tuple[Optional[Value], ...] = tuple(outputs)
        self._graph: Optional[Graph] = None

    @property
    def inputs(self) -> tuple[Optional[Value], ...]:
        return tuple(self._inputs)

    @inputs.setter
    def inputs(self, values: Sequence[Optional[Value]]) -> None:
        self._unlink_inputs()
        self._inputs = list(values)
        self._link_inputs()

    @property
    def outputs(self) -> tuple[Optional[Value], ...]:
        return self._outputs

    def set_input(self, index: int, value: Optional[Value]) -> None:
        """Make input slot `index` read `value` (None: omit an optional input).

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,)); y = g.add_input("y", "float32", (2,))
            >>> n = g.add_node("Add", [x, x]); n.set_input(1, y); n.inputs, x.uses()
            ((Value('x', float32, (2,)), Value('y', float32, (2,))), [(Node('Add', name='Add'), 0)])
        """
        old = self._inputs[index]
        if self._graph is not None and old is not None:
            old._uses.pop((self, index), None)
        self._inputs[index] = value
        if self._graph is not None and value is not None:
            value._uses[(self, index)] = None

    def _link_inputs(self) -> None:
        if self._graph is not None:
            for i, v in enumerate(self._inputs):
                if v is not None:
                    v._uses[(self, i)] = None

    def _unlink_inputs(self) -> None:
        if self._graph is not None:
            for i, v in enumerate(self._inputs):
                if v is not None:
                    v._uses.pop((self, i), None)

    def __repr__(self) -> str:
        return f"Node({self.op_type!r}, name={self.name!r})"


class Graph:
    """A mutable graph in ONNX semantics; see the module docstring for an example."""

    def __init__(self, name: str = "main", opsets: Optional[dict[str, int]] = None,
                 producer_name: str = "modelkit"):
        self.name = name
        self.opsets: dict[str, int] = dict(opsets) if opsets is not None else {"": 17}
        self.producer_name = producer_name
        self.metadata: dict[str, str] = {}
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.memory_plan: Optional[dict[str, int]] = None
        self.test_vectors: list[plain.TestVector] = []
        self._values: dict[str, Value] = {}
        self._node_names: set[str] = set()
        self._name_counters: dict[str, int] = {}

    # -- names ------------------------------------------------------------------------------
    @property
    def values(self) -> MappingProxyType:
        """Every value by name (read-only view)."""
        return MappingProxyType(self._values)

    def unique_value_name(self, base: str) -> str:
        """`base` if no value has that name yet, else `base_1`, `base_2`, ...

        Example:
            >>> g = Graph(); _ = g.add_input("x", "float32", (1,))
            >>> g.unique_value_name("x"), g.unique_value_name("y")
            ('x_1', 'y')
        """
        return self._unique(base, self._values)

    def unique_node_name(self, base: str) -> str:
        """`base` if no node has that name yet, else `base_1`, `base_2`, ...

        Example:
            >>> g = Graph(); _ = g.add_node("Constant", [], attrs={"value_float": 1.0})
            >>> g.unique_node_name("Constant")
            'Constant_1'
        """
        return self._unique(base, self._node_names)

    def _unique(self, base: str, taken) -> str:
        if base not in taken:
            return base
        k = self._name_counters.get(base, 0)
        while True:
            k += 1
            candidate = f"{base}_{k}"
            if candidate not in taken:
                self._name_counters[base] = k
                return candidate

    def _register(self, value: Value) -> Value:
        if value._name in self._values:
            raise ValueError(f"a value named {value._name!r} already exists in graph {self.name!r}")
        self._values[value._name] = value
        value._graph = self
        return value

    def _rename_value(self, value: Value, new: str) -> None:
        if new == value._name:
            return
        if new in self._values:
            raise ValueError(f"cannot rename {value._name!r} to {new!r}: that name is taken")
        del self._values[value._name]
        self._values[new] = value

    # -- building ---------------------------------------------------------------------------
    def add_input(self, name: str, dtype: str, shape: Sequence[Dim]) -> Value:
        """Append a graph input.

        Example:
            >>> Graph().add_input("x", "float32", ("batch", 3))
            Value('x', float32, ('batch', 3))
        """
        value = self._register(Value(name, dtype, shape))
        self.inputs.append(value)
        return value

    def add_initializer(self, name: str, array: np.ndarray, dtype: Optional[str] = None) -> Value:
        """Add a constant tensor (a weight); its dtype and shape come from `array`, except that
        `dtype="bfloat16"` declares a uint16 array as bfloat16 bit patterns (numpy has no bfloat16).

        Example:
            >>> Graph().add_initializer("w", np.zeros((2, 3), np.float32))
            Value('w', float32, (2, 3))
        """
        array = np.asarray(array)
        if dtype not in (None, dtype_name(array)) and not (dtype == "bfloat16" and array.dtype == np.uint16):
            raise ValueError(f"initializer {name!r}: a {array.dtype} array cannot be declared {dtype}")
        return self._register(Value(name, dtype or dtype_name(array), array.shape, data=array))

    def add_node(self, op_type: str, inputs: Sequence[Optional[Value]],
                 outputs: Union[int, Sequence[Optional[str]]] = 1,
                 attrs: Optional[dict[str, Any]] = None, *, domain: str = "",
                 name: Optional[str] = None, source: str = "", module: str = "",
                 before: Optional[Node] = None) -> Node:
        """Create a node reading `inputs` and append it (or insert it before node `before`).

        `outputs` is a count (names are generated from the node name) or a list of names, None
        for an omitted optional output. Node names default to `module/op_type`, made unique.
        Output dtype and shape start unknown; set `node.outputs[i].dtype/.shape` when known.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (4,))
            >>> g.add_node("Split", [x], ["a", "b"], {"num_outputs": 2}).outputs
            (Value('a', None, None), Value('b', None, None))
        """
        for v in inputs:
            if v is not None and v._graph is not self:
                raise ValueError(f"input {v.name!r} of new {op_type} node belongs to another graph")
        if name is None:
            name = self.unique_node_name(f"{module}/{op_type}" if module else op_type)
        if isinstance(outputs, int):
            outputs = [self.unique_value_name(f"{name}_output_{i}") for i in range(outputs)]
        out_values = [None if o is None else self._register(Value(o)) for o in outputs]
        node = Node(op_type, inputs, out_values, attrs, name=name, domain=domain,
                    source=source, module=module)
        self._attach(node, before)
        return node

    def _attach(self, node: Node, before: Optional[Node] = None) -> None:
        node._graph = self
        node._link_inputs()
        for i, v in enumerate(node._outputs):
            if v is not None:
                v.producer, v.producer_index = node, i
        if node.name:
            self._node_names.add(node.name)
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)

    # -- queries ----------------------------------------------------------------------------
    @property
    def initializers(self) -> list[Value]:
        """Values that hold data, in the order they were added."""
        return [v for v in self._values.values() if v.data is not None]

    def value(self, name: str) -> Value:
        """The value called `name`; KeyError names a few similar ones when there is none.

        Example:
            >>> g = Graph(); _ = g.add_input("x", "float32", (2,)); g.value("x")
            Value('x', float32, (2,))
        """
        try:
            return self._values[name]
        except KeyError:
            near = [n for n in self._values if name.lower() in n.lower()][:5]
            raise KeyError(f"no value named {name!r} in graph {self.name!r}"
                           + (f"; similar: {near}" if near else "")) from None

    def producer(self, value: Value) -> Optional[Node]:
        """The node that computes `value`; None for inputs, initializers and dangling values.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> y = g.add_node("Relu", [x], name="act").outputs[0]; g.producer(y), g.producer(x)
            (Node('Relu', name='act'), None)
        """
        return value.producer

    def consumers(self, value: Value) -> list[Node]:
        """The nodes that read `value`.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> _ = g.add_node("Relu", [x], name="act"); g.consumers(x)
            [Node('Relu', name='act')]
        """
        return value.consumers()

    # -- rewriting --------------------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every node input and graph output that reads `old` read `new` instead.

        A graph output then carries `new`'s name; to keep the output's public name, remove
        `old`'s producer afterwards and rename: `new.name = old_name`.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> y = g.add_node("Identity", [x], ["y"]).outputs[0]
            >>> z = g.add_node("Relu", [y], ["z"]).outputs[0]
            >>> g.replace_all_uses(y, x); g.remove_node(y.producer); [n.op_type for n in g.nodes]
            ['Relu']
        """
        for node, index in list(old._uses):
            node.set_input(index, new)
        self.outputs[:] = [new if v is old else v for v in self.outputs]

    def remove_node(self, node: Node) -> None:
        """Remove `node`; its outputs must be unused (no consumer, not a graph output).

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> n = g.add_node("Relu", [x]); g.remove_node(n); g.nodes, x.uses()
            ([], [])
        """
        for v in node._outputs:
            if v is None:
                continue
            if v._uses:
                users = ", ".join(repr(n.name) for n in v.consumers())
                raise ValueError(f"cannot remove node {node.name!r}: its output {v.name!r} is "
                                 f"still read by {users}; replace_all_uses first")
            if any(o is v for o in self.outputs):
                raise ValueError(f"cannot remove node {node.name!r}: its output {v.name!r} is a "
                                 "graph output")
        node._unlink_inputs()
        self.nodes.remove(node)
        self._node_names.discard(node.name)
        for v in node._outputs:
            if v is not None:
                del self._values[v._name]
                v._graph, v.producer, v.producer_index = None, None, -1
        node._graph = None

    def remove_value(self, value: Value) -> None:
        """Remove an unused initializer, graph input or dangling value.

        Example:
            >>> g = Graph(); w = g.add_initializer("unused", np.zeros(2)); g.remove_value(w)
            >>> g.initializers
            []
        """
        if value._uses or value.producer is not None or any(o is value for o in self.outputs):
            raise ValueError(f"cannot remove value {value.name!r}: it is produced, read or a graph output")
        self.inputs[:] = [v for v in self.inputs if v is not value]
        del self._values[value._name]
        value._graph = None

    def topological_sort(self) -> None:
        """Reorder `nodes` so every node comes after the producers of its inputs, keeping the
        current order wherever it already allows; raises ExportError naming a cycle's nodes.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> a = g.add_node("Relu", [x], name="a"); b = g.add_node("Neg", [a.outputs[0]], name="b")
            >>> g.nodes.reverse(); g.topological_sort(); [n.name for n in g.nodes]
            ['a', 'b']
        """
        position = {node: i for i, node in enumerate(self.nodes)}
        predecessors = [{position[v.producer] for v in node._inputs
                         if v is not None and v.producer in position} for node in self.nodes]
        order = stable_topological_order(predecessors)
        if len(order) < len(self.nodes):
            stuck = sorted(set(range(len(self.nodes))) - set(order))
            names = ", ".join(f"{self.nodes[i].name or '#' + str(i)} ({self.nodes[i].op_type})"
                              for i in stuck[:10])
            raise ExportError(f"graph {self.name!r} has a cycle among nodes {names}")
        self.nodes[:] = [self.nodes[i] for i in order]

    # -- conversion to and from the plain-data Model ---------------------------------------------
    @classmethod
    def from_model(cls, model: plain.Model) -> "Graph":
        """Build a graph from a plain `Model` (as `format.read` or `read_onnx` return).

        Node inputs that nothing produces become dangling values (no producer, no data), so a
        broken model still converts and `graph_check` can report it; a value produced twice
        raises ValueError.

        Example:
            >>> from modelkit.edge_runtime.format.model import Model, Node as N, ValueInfo
            >>> m = Model([ValueInfo("x", "float32", (2,))], [ValueInfo("y", "float32", (2,))],
            ...           [N("Relu", ["x"], ["y"], name="r")])
            >>> Graph.from_model(m).to_model() == m
            True
        """
        g = cls(model.graph_name, model.opsets, model.producer)
        g.metadata = dict(model.metadata)
        g.memory_plan = None if model.memory_plan is None else dict(model.memory_plan)
        g.test_vectors = list(model.test_vectors)
        for info in model.inputs:
            g.add_input(info.name, info.dtype, info.shape)
        declared = {info.name: info.dtype for info in model.value_info}
        for name, array in model.initializers.items():
            bits = declared.get(name) == "bfloat16" and array.dtype == np.uint16
            g.add_initializer(name, array, "bfloat16" if bits else None)
        produced = [[None if not o else g._register(Value(o)) for o in n.outputs] for n in model.nodes]

        def value_for(name):
            if not name:
                return None
            return g._values.get(name) or g._register(Value(name))

        for n, outs in zip(model.nodes, produced):
            node = Node(n.op_type, [value_for(i) for i in n.inputs], outs, n.attrs, name=n.name,
                        domain=n.domain, source=n.source, module=n.module)
            g._attach(node)
        g.outputs = [value_for(info.name) for info in model.outputs]
        for info in list(model.value_info) + list(model.outputs):
            v = g._values.get(info.name)
            if v is None:
                continue
            if v.data is None:
                v.dtype, v.shape = info.dtype, info.shape
        for name, q in model.quantization.items():
            if name in g._values:
                g._values[name].quantization = q
        return g

    def to_model(self) -> plain.Model:
        """The graph as a plain `Model` (arrays shared, not copied).

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,))
            >>> g.outputs.append(x); g.to_model().outputs
            [ValueInfo(name='x', dtype='float32', shape=(2,))]
        """
        io = {id(v) for v in self.inputs} | {id(v) for v in self.outputs}
        return plain.Model(
            inputs=[_value_info(v, "input") for v in self.inputs],
            outputs=[_value_info(v, "output") for v in self.outputs],
            nodes=[plain.Node(n.op_type, [v.name if v is not None else "" for v in n._inputs],
                              [v.name if v is not None else "" for v in n._outputs],
                              dict(n.attrs), n.name, n.domain, n.source, n.module)
                   for n in self.nodes],
            initializers={v.name: v.data for v in self.initializers},
            value_info=[plain.ValueInfo(v.name, v.dtype, v.shape) for v in self._values.values()
                        if id(v) not in io and v.dtype is not None and (
                            v.producer is not None if v.data is None else v.dtype != dtype_name(v.data))],
            quantization={v.name: v.quantization for v in self._values.values()
                          if v.quantization is not None},
            opsets=dict(self.opsets),
            metadata=dict(self.metadata),
            producer=self.producer_name,
            graph_name=self.name,
            memory_plan=None if self.memory_plan is None else dict(self.memory_plan),
            test_vectors=list(self.test_vectors),
        )

    def copy(self) -> "Graph":
        """An independent copy of the structure (weight arrays are shared, not copied), e.g. to
        compare a graph before and after a pass.

        Example:
            >>> g = Graph(); x = g.add_input("x", "float32", (2,)); g.outputs.append(x)
            >>> c = g.copy(); c.value("x").name = "renamed"; [v.name for v in g.inputs]
            ['x']
        """
        return Graph.from_model(self.to_model())

    def __str__(self) -> str:
        def sig(v):
            return f"{v.name}: {v.dtype}[{','.join(map(str, v.shape or ()))}]"

        lines = [f"graph {self.name} ({', '.join(sig(v) for v in self.inputs)}) -> "
                 f"({', '.join(v.name for v in self.outputs)})"]
        for n in self.nodes:
            outs = ", ".join(v.name if v is not None else "_" for v in n._outputs)
            ins = ", ".join(v.name if v is not None else "" for v in n._inputs)
            op = f"{n.domain}::{n.op_type}" if n.domain else n.op_type
            where = " ".join(s for s in (n.module, n.source) if s)
            lines.append(f"  {outs} = {op}({ins})" + (f"  # {where}" if where else ""))
        return "\n".join(lines)


def _value_info(value: Value, kind: str) -> plain.ValueInfo:
    if value.dtype is None:
        raise ExportError(f"graph {kind} {value.name!r} has no dtype; set value.dtype before writing")
    return plain.ValueInfo(value.name, value.dtype, value.shape)


def stable_topological_order(predecessors: Sequence[Iterable[int]]) -> list[int]:
    """Indices 0..n-1 ordered so each comes after its predecessors, earliest index first among
    the ready ones; indices on (or behind) a cycle are left out, so a short result means a cycle.

    Example:
        >>> stable_topological_order([{2}, set(), set()]), stable_topological_order([{1}, {0}])
        ([1, 2, 0], [])
    """
    successors: list[list[int]] = [[] for _ in predecessors]
    missing = [0] * len(predecessors)
    for i, preds in enumerate(predecessors):
        for p in set(preds):
            if p != i:
                successors[p].append(i)
                missing[i] += 1
            else:
                missing[i] += 1  # a node reading its own output can never be ready
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for s in successors[i]:
            missing[s] -= 1
            if missing[s] == 0:
                heapq.heappush(ready, s)
    return order
