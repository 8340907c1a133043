"""Fuzz target: the `.mkb` loader (`edge_runtime.load`: `format.read`, then the graph checks).

Real files (an exported mk.nn model and a hand-written one using every table of the format) are
mutated: truncated, bytes flipped, 32-bit offsets and lengths rewritten to point past the end,
at other objects or back at their own tables (cycles and depth bombs), a stored shape rewritten
to huge or negative dims. Random graphs (with cycles, self-loops, repeated outputs) are written
and loaded too. Every case must give a Session or `ModelFormatError` (`UnsupportedOpError` when
a flipped byte renames an op): no other exception, within a wall-clock limit, and with peak
memory bounded by a small multiple of the file size. Loaded random graphs are run and compared
with numpy.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz_settings import fuzz, peak_memory, wall_clock_limit
from real_models import LOCATABLE_SHAPE, exported_mlp, feature_model

from modelkit import edge_runtime
from modelkit.edge_runtime import ModelFormatError, UnsupportedOpError
from modelkit.edge_runtime.format import Model, Node, ValueInfo, write

CASE_SECONDS = 5
MEMORY_FACTOR, MEMORY_SLACK = 16, 256 << 10
REAL_FILES = {"exported_mlp": exported_mlp, "feature_model": feature_model}
INTERESTING_U32 = (0, 1, 3, 4, 8, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF)
INTERESTING_I64 = (-1, -2, -(2 ** 63), 2 ** 63 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 0, 1 << 62)


def load_guarded(data: bytes):
    """Load `data` under the wall-clock and memory guards; the Session, or the refusal."""
    with peak_memory() as peak, wall_clock_limit(CASE_SECONDS):
        try:
            result = edge_runtime.load(data)
        except (ModelFormatError, UnsupportedOpError) as refusal:
            result = refusal
    assert peak[0] <= MEMORY_FACTOR * len(data) + MEMORY_SLACK, \
        f"loading {len(data)} bytes peaked at {peak[0]} bytes"
    return result



@st.composite
def mutated_files(draw):
    name = draw(st.sampled_from(sorted(REAL_FILES)))
    data = bytearray(REAL_FILES[name]()[0])
    size = len(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "u32", "pointer"]))
        if kind == "flip":
            data[draw(st.integers(0, size - 1))] = draw(st.integers(0, 255))
        elif kind == "u32":
            pos = draw(st.integers(0, size // 4 - 1)) * 4
            value = draw(st.sampled_from(INTERESTING_U32 + (size, size - 4, size + 4))
                         | st.integers(0, 2 ** 32 - 1))
            data[pos:pos + 4] = struct.pack("<I", value)
        elif kind == "pointer":
            # A relative offset aimed at another object: overlap, a cycle or a depth bomb.
            pos = draw(st.integers(1, size // 4 - 1)) * 4
            target = draw(st.integers(0, size // 4 - 1)) * 4
            data[pos:pos + 4] = struct.pack("<I", (target - pos) % 2 ** 32)
    if draw(st.booleans()):
        del data[draw(st.integers(0, size - 1)):]
    return bytes(data)


@fuzz(300)
@given(mutated_files())
def test_mutated_real_files_load_or_raise_model_format_error(data):
    load_guarded(data)


@fuzz(100)
@given(st.sampled_from(sorted(REAL_FILES)), st.data())
def test_truncated_real_files_are_refused(name, draw):
    original = REAL_FILES[name]()[0]
    data = original[:draw.draw(st.integers(0, len(original) - 1))]
    result = load_guarded(data)
    # Every byte of a written file is part of the flatbuffer or of a weight.
    assert isinstance(result, ModelFormatError), len(data)


@fuzz(100)
@given(st.lists(st.sampled_from(INTERESTING_I64) | st.integers(-(2 ** 63), 2 ** 63 - 1),
                min_size=2, max_size=2))
def test_huge_and_negative_stored_shapes_are_refused(dims):
    original = feature_model()[0]
    pattern = struct.pack("<qq", *LOCATABLE_SHAPE)
    data = original.replace(pattern, struct.pack("<qq", *dims))
    result = load_guarded(data)
    if tuple(dims) != LOCATABLE_SHAPE:
        assert isinstance(result, ModelFormatError), dims


def test_deep_chain_of_nodes_loads_and_runs():
    """A graph 5,000 nodes deep: no recursion limit anywhere in reading, checking or planning."""
    n = 5000
    nodes = [Node("Neg", [f"v{i}"], [f"v{i + 1}"]) for i in range(n)]
    model = Model([ValueInfo("v0", "float32", (2,))], [ValueInfo(f"v{n}", "float32", (2,))],
                  nodes)
    with wall_clock_limit(60):
        out = edge_runtime.load(write(model)).run({"v0": np.array([1, -2], np.float32)})
    np.testing.assert_array_equal(out[f"v{n}"], np.array([1, -2], np.float32))


UNARY = {"Neg": np.negative, "Abs": np.abs, "Relu": lambda a: np.maximum(a, 0)}
BINARY = {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract}


@st.composite
def random_graphs(draw):
    """Nodes whose inputs are any value, earlier or later: cycles, self-loops, values produced
    twice and dangling references all come up."""
    count = draw(st.integers(1, 6))
    values = ["x"] + [f"v{i}" for i in range(count)]
    nodes = []
    for i in range(count):
        op = draw(st.sampled_from(sorted(UNARY) + sorted(BINARY)))
        arity = 1 if op in UNARY else 2
        inputs = [draw(st.sampled_from(values + ["ghost"])) for _ in range(arity)]
        output = draw(st.sampled_from([f"v{i}", f"v{i}", f"v{i}", *values]))
        nodes.append(Node(op, inputs, [output], name=f"n{i}"))
    output = draw(st.sampled_from(values))
    return Model([ValueInfo("x", "float32", ("n",))], [ValueInfo(output, "float32", ("n",))],
                 nodes)


def evaluate(model: Model, x: np.ndarray):
    """The numpy oracle; None when the graph is not a valid topologically ordered DAG."""
    env = {"x": x}
    for node in model.nodes:
        if any(i not in env for i in node.inputs) or node.outputs[0] in env:
            return None
        fn = UNARY.get(node.op_type) or BINARY[node.op_type]
        env[node.outputs[0]] = fn(*(env[i] for i in node.inputs))
    return env.get(model.outputs[0].name)


@fuzz(200)
@given(random_graphs())
def test_random_graphs_load_and_match_numpy_or_are_refused(model):
    x = np.array([1.5, -2.0, 0.0], np.float32)
    data = write(model)
    result = load_guarded(data)
    expected = evaluate(model, x)
    if expected is None:
        assert isinstance(result, ModelFormatError), model.nodes
        return
    # A valid DAG in topological order must load; the runtime may not reorder or refuse it.
    assert isinstance(result, edge_runtime.Session), result
    got = result.run({"x": x})[model.outputs[0].name]
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    """Regression: `read` opened a FIFO named like a model and waited for a writer forever."""
    path = tmp_path / "model.mkb"
    os.mkfifo(path)
    with wall_clock_limit(CASE_SECONDS), pytest.raises(ModelFormatError, match="regular file"):
        edge_runtime.load(str(path))
