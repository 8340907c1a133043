"""Small real models for the fuzz targets, made here rather than committed as files.

`exported_mlp` goes through the real exporter (mk.nn -> trace -> passes -> Model);
`feature_model` is written by hand to use every part of the `.mkb` format: attributes of each
kind, a tensor attribute, string and quantized tensors, symbolic dims, metadata, a memory plan
and a test vector. Its initializer `w` has the distinctive shape (7, 11) so a fuzz target can
find that shape in the file's bytes and rewrite it.
"""

from __future__ import annotations

import functools

import numpy as np

from modelkit.edge_runtime.format import (Model, Node, Quantization, TestVector, ValueInfo,
                                          write)

LOCATABLE_SHAPE = (7, 11)


@functools.cache
def exported_mlp() -> tuple[bytes, dict]:
    """(.mkb bytes, feeds) of mk.nn Linear-ReLU-Linear with a dynamic batch dim."""
    import modelkit.authoring as mk
    from modelkit.exporter.export import export

    mk.manual_seed(0)
    net = mk.nn.Sequential(mk.nn.Linear(6, 5), mk.nn.ReLU(), mk.nn.Linear(5, 3))
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    graph = export(net, (x,), input_names=["x"], output_names=["y"],
                   dynamic_axes={"x": {0: "batch"}})
    return write(graph.to_model()), {"x": x}


@functools.cache
def feature_model() -> tuple[bytes, dict]:
    """(.mkb bytes, feeds) of a hand-written model using every table of the format."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal(LOCATABLE_SHAPE).astype(np.float32)
    q = rng.integers(-100, 100, (11,), dtype=np.int8)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    model = Model(
        inputs=[ValueInfo("x", "float32", ("batch", 7))],
        outputs=[ValueInfo("y", "float32", ("batch", 11)), ValueInfo("labels", "string", (2,))],
        nodes=[
            Node("MatMul", ["x", "w"], ["h"], name="matmul", source="net.py:3", module="fc"),
            Node("DequantizeLinear", ["q", "q_scale", "q_zero"], ["b"], name="dq"),
            Node("Add", ["h", "b"], ["z"], name="add"),
            Node("LeakyRelu", ["z"], ["y"], {"alpha": 0.1}, name="act"),
            Node("Constant", [], ["labels"],
                 {"value": np.array(["cat", "dog"], dtype=object)}, name="names"),
            Node("Constant", [], ["unused"], {"value_ints": [1, 2, 3]}, name="ints"),
            Node("Constant", [], ["unused2"], {"value_floats": [0.5, 1.5]}, name="floats"),
            Node("Pad", ["x", "pads"], ["padded"], {"mode": "reflect"}, name="pad"),
        ],
        initializers={"w": w, "pads": np.array([0, 1, 0, 1], np.int64), "q": q,
                      "q_scale": np.array(0.02, np.float32),
                      "q_zero": np.array(3, np.int8)},
        value_info=[ValueInfo("h", "float32", ("batch", 11))],
        quantization={"q": Quantization(np.array(0.02, np.float32), np.array(3, np.int8))},
        metadata={"author": "fuzz", "license": "none"},
        memory_plan={"h": 0, "z": 1},
        test_vectors=[TestVector({"x": x}, {})],
    )
    return write(model), {"x": x}
