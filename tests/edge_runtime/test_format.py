"""`.mkb` write/read: round trip, determinism, zero-copy weights, alignment, atomic writes."""

import dataclasses
import mmap
import os

import numpy as np
import pytest

from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format import (
    Model, Node, Quantization, TestVector, ValueInfo, read, write,
)
from modelkit.edge_runtime.format import modelkit_generated as fb


def rich_model() -> Model:
    """A model using every feature of the format."""
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    q_w = rng.integers(-127, 128, size=(4, 8), dtype=np.int8)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    return Model(
        inputs=[ValueInfo("x", "float32", ("batch", 3, 8, 8)),
                ValueInfo("tokens", "int64", ("batch", "seq"))],
        outputs=[ValueInfo("y", "float32", ("batch", 4, 6, 6)),
                 ValueInfo("anything", "float32", None)],
        nodes=[
            Node("Conv", ["x", "conv_w", ""], ["c"], name="conv",
                 attrs={"kernel_shape": [3, 3], "group": 1, "strides": [1, 1],
                        "auto_pad": "NOTSET", "alpha": 1e-5, "scales": [0.5, 2.0, 1e-30],
                        "tags": ["a", "ü", ""], "blob": b"\x00\xffraw", "empty": [],
                        "zero": 0.0, "none": 0, "nothing": "", "no_bytes": b""},
                 source="model.py:12", module="features.0"),
            Node("Constant", [], ["k"], attrs={"value": np.array([1.5, -2.0], np.float32)}),
            Node("Dropout", ["c"], ["y", ""], attrs={"seed": -(2 ** 63)}),
            Node("MyOp", ["tokens", "", "q_w"], ["anything"], domain="com.example",
                 attrs={"mode": "fast", "table": np.array([[1, 2], [3, 4]], np.int64)}),
        ],
        initializers={
            "conv_w": conv_w,
            "q_w": q_w,
            "mask": np.array([True, False, True]),
            "half": np.arange(5, dtype=np.float16),
            "scalar": np.array(7, dtype=np.int64),
            "empty": np.zeros((0, 3), np.float32),
            "words": np.array([["hello", ""], ["ü", b"\xff\x00binary"]], dtype=object),
            "bf16": np.array([0x3F80, 0x4000], dtype=np.uint16),
            "u64": np.array([2 ** 64 - 1], dtype=np.uint64),
        },
        value_info=[ValueInfo("c", "float32", ("batch", 4, "", 6)),
                    ValueInfo("bf16", "bfloat16", (2,))],
        quantization={
            "q_w": Quantization(np.linspace(0.1, 0.4, 4, dtype=np.float32),
                                np.zeros(4, np.int8), axis=0),
            "c": Quantization(np.array(0.05, np.float32), np.array(3, np.uint8)),
        },
        opsets={"": 17, "com.example": 2},
        metadata={"author": "me", "license": "Apache-2.0", "note": "ü"},
        producer="modelkit-test",
        graph_name="rich",
        memory_plan={"c": 0, "y": 1, "anything": 0},
        test_vectors=[
            TestVector({"x": x, "tokens": np.array([[1, 2]], np.int64)},
                       {"y": np.ones((1, 4, 6, 6), np.float32)}),
            TestVector({"x": x[:, :, ::-1]}, {}),
        ],
    )


def assert_same(a, b, where="model"):
    """Deep equality that compares arrays by dtype, shape and values."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def test_round_trip_keeps_every_field():
    model = rich_model()
    assert_same(read(write(model)), model)


def test_round_trip_of_a_minimal_model():
    model = Model([], [], [])
    assert_same(read(write(model)), model)


def test_identical_models_give_identical_bytes():
    a = write(rich_model())
    b = rich_model()
    b.initializers = dict(reversed(list(b.initializers.items())))
    b.metadata = dict(reversed(list(b.metadata.items())))
    b.nodes[0].attrs = dict(reversed(list(b.nodes[0].attrs.items())))
    b.initializers["conv_w"] = np.asfortranarray(b.initializers["conv_w"])
    b.initializers["half"] = b.initializers["half"].astype(">f2")
    assert write(b) == a


def test_repeated_strings_are_stored_once():
    source = "/a/long/path/to/the/users/model.py:42"
    nodes = [Node("Relu", [f"v{i}"], [f"v{i + 1}"], name=f"relu{i}", source=source, module="body")
             for i in range(50)]
    model = Model([ValueInfo("v0", "float32", (2,))], [ValueInfo("v50", "float32", (2,))], nodes)
    data = write(model)
    assert data.count(source.encode()) == 1
    assert data.count(b"v7\x00") == 1  # produced by relu6, consumed by relu7
    assert_same(read(data), model)


def test_weights_are_read_only_views_on_the_mapped_file(tmp_path):
    path = tmp_path / "m.mkb"
    write(rich_model(), path)
    model = read(path)
    arrays = [a for a in model.initializers.values() if a.dtype != object and a.size]
    arrays += list(model.test_vectors[0].inputs.values())
    arrays += [model.quantization["q_w"].scale, model.nodes[1].attrs["value"]]
    for array in arrays:
        assert not array.flags.writeable
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
        assert np.shares_memory(array, np.frombuffer(base, np.uint8))


def test_bytes_input_is_viewed_not_copied():
    data = bytearray(write(rich_model()))
    w = read(data).initializers["conv_w"]
    assert np.shares_memory(w, np.frombuffer(data, np.uint8))
    assert not w.flags.writeable


def test_every_weight_is_64_byte_aligned_and_inside_the_data_segment():
    data = write(rich_model())
    root = fb.ModelFile.GetRootAs(data, 0)
    assert fb.ModelFile.ModelFileBufferHasIdentifier(data, 0)
    assert root.DataOffset() % 64 == 0
    graph = root.Graph()
    refs = [graph.Tensors(i).Data() for i in range(graph.TensorsLength())]
    refs += [graph.Tensors(i).Quantization().Scale().Data() for i in range(graph.TensorsLength())
             if graph.Tensors(i).Quantization()]
    refs = [r for r in refs if r is not None]
    assert len(refs) == 8 + 2  # numeric initializers + quantization scales
    for ref in refs:
        assert ref.Offset() % 64 == 0
        assert root.DataOffset() <= ref.Offset() <= ref.Offset() + ref.Length() <= len(data)

    # Every array the reader hands out, attribute tensors and test vectors included.
    model = read(data)
    arrays = [*model.initializers.values(), *model.test_vectors[0].inputs.values(),
              *model.test_vectors[0].outputs.values(), model.nodes[1].attrs["value"],
              model.nodes[3].attrs["table"], model.quantization["c"].zero_point]
    start = np.frombuffer(data, np.uint8).__array_interface__["data"][0]
    offsets = [a.__array_interface__["data"][0] - start for a in arrays if a.dtype != object]
    assert len(offsets) == 14 and all(o % 64 == 0 and o >= root.DataOffset() for o in offsets)


def test_generated_accessors_read_what_the_writer_wrote():
    data = write(rich_model())
    root = fb.ModelFile.GetRootAs(data, 0)
    assert (root.FormatMajor(), root.FormatMinor(), root.Producer()) == (1, 0, b"modelkit-test")
    graph = root.Graph()
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    assert names == sorted(names)
    conv = graph.Nodes(0)
    op = root.Operators(conv.Operator())
    assert (op.OpType(), op.Opset(), conv.Source(), conv.Module()) == (
        b"Conv", 17, b"model.py:12", b"features.0")
    assert [conv.Inputs(i) for i in range(conv.InputsLength())][2] == -1
    attrs = {conv.Attributes(i).Name().decode(): conv.Attributes(i)
             for i in range(conv.AttributesLength())}
    assert attrs["kernel_shape"].Kind() == fb.AttributeKind.INTS
    assert list(attrs["kernel_shape"].IntsAsNumpy()) == [3, 3]


def test_values_of_every_dtype_survive(tmp_path):
    dtypes = ["float32", "float64", "float16", "int8", "int16", "int32", "int64",
              "uint8", "uint16", "uint32", "uint64", "bool"]
    arrays = {d: (np.arange(6) % 2).astype(d).reshape(2, 3) for d in dtypes}
    model = Model([], [], [], initializers=arrays)
    back = read(write(model)).initializers
    for d in dtypes:
        assert back[d].dtype == np.dtype(d) and np.array_equal(back[d], arrays[d]), d


def test_write_to_a_path_is_atomic_and_replaces(tmp_path, monkeypatch):
    path = tmp_path / "m.mkb"
    path.write_bytes(b"old")
    assert write(rich_model(), path) is None
    assert path.read_bytes() == write(rich_model())
    assert os.listdir(tmp_path) == ["m.mkb"]

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write(Model([], [], []), str(path))
    assert path.read_bytes() == write(rich_model())
    assert os.listdir(tmp_path) == ["m.mkb"]


@pytest.mark.parametrize("change, message", [
    (lambda m: m.inputs.append(ValueInfo("z", "complex64", (1,))), "dtype 'complex64'"),
    (lambda m: m.value_info.append(ValueInfo("x", "float32", (1,))), "declared twice"),
    (lambda m: m.initializers.update(bf16=np.zeros(2, np.float64)), "its ValueInfo"),
    (lambda m: m.value_info.append(ValueInfo("conv_w", "float32", (9,))), "has shape"),
    (lambda m: m.initializers.update(c64=np.zeros(2, np.complex64)), "complex64"),
    (lambda m: m.initializers.update(lst=[1.0]), "numpy array"),
    (lambda m: m.opsets.pop("com.example"), "'com.example'"),
    (lambda m: m.nodes[0].attrs.update(bad={"a": 1}), "attribute 'bad'"),
    (lambda m: m.nodes[0].attrs.update(big=2 ** 63), "attribute 'big'"),
    (lambda m: m.nodes[0].inputs.append(7), "non-empty strings"),
    (lambda m: m.memory_plan.update(c=10 ** 6), "memory plan slot"),
    (lambda m: m.test_vectors[0].inputs.update(w=np.zeros(1)), "not a graph input"),
    (lambda m: m.inputs.append(ValueInfo("n", "float32", (-2,))), "dim"),
    (lambda m: m.metadata.update(version=3), "metadata 'version' must be a str"),
    (lambda m: m.nodes.append(Node("", ["x"], ["z"])), "op_type"),
])
def test_writer_refuses_models_the_format_cannot_hold(change, message):
    model = rich_model()
    change(model)
    with pytest.raises(ModelFormatError, match=message):
        write(model)
