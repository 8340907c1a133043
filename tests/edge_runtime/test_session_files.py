"""Sessions loaded from `.mkb` files: weights are views on the mapped file (not copies), a file
holding an op of an app's own domain runs once its kernel is registered, and test vectors
embedded in the file check it."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from modelkit import edge_runtime
from modelkit.edge_runtime import UnsupportedOpError, register_kernel
from modelkit.edge_runtime.format.model import Model, Node, TestVector, ValueInfo


def _weights_model():
    rng = np.random.default_rng(0)
    return Model(
        inputs=[ValueInfo("x", "float32", ("batch", 64))],
        outputs=[ValueInfo("y", "float32", ("batch", 32))],
        nodes=[Node("MatMul", ["x", "w"], ["h"]), Node("Add", ["h", "b"], ["y"])],
        initializers={"w": rng.standard_normal((64, 32)).astype(np.float32),
                      "b": rng.standard_normal(32).astype(np.float32)})


def _mapping_of(array):
    while isinstance(array.base, np.ndarray):
        array = array.base
    owner = array.base
    return owner.obj if isinstance(owner, memoryview) else owner


def test_weights_are_views_on_the_mapped_file(tmp_path):
    model = _weights_model()
    path = tmp_path / "m.mkb"
    edge_runtime.format.write(model, path)
    sess = edge_runtime.load(path)
    plan = sess._plan
    for name, original in model.initializers.items():
        executed = plan.initial_slots[plan.slot_of[name]]
        assert executed is sess.model.initializers[name]
        assert not executed.flags.owndata and not executed.flags.writeable
        assert isinstance(_mapping_of(executed), mmap.mmap), type(_mapping_of(executed))
        np.testing.assert_array_equal(executed, original)
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(sess.run({"x": x})["y"], x @ model.initializers["w"] + model.initializers["b"],
                               rtol=1e-5)


def test_file_with_a_custom_domain_op_runs_once_its_kernel_is_registered(tmp_path):
    model = Model(inputs=[ValueInfo("x", "float32", ("n",))], outputs=[ValueInfo("y", "float32", ("n",))],
                  nodes=[Node("ScaledClip", ["x"], ["y"], domain="com.example.app",
                              attrs={"limit": 2.0, "scale": 3.0})],
                  opsets={"": 17, "com.example.app": 1})
    path = tmp_path / "custom.mkb"
    edge_runtime.format.write(model, path)
    with pytest.raises(UnsupportedOpError) as info:
        edge_runtime.load(path)
    assert info.value.missing == ["com.example.app::ScaledClip"]

    def scaled_clip(xp, x, *, limit, scale=1.0):
        return (xp.clip(x, -limit, limit) * xp.asarray(scale, x.dtype),)

    register_kernel("com.example.app", "ScaledClip", scaled_clip)
    got = edge_runtime.load(path).run({"x": np.array([-5.0, 1.0, 5.0], np.float32)})["y"]
    assert got.dtype == np.float32 and got.tolist() == [-6.0, 3.0, 6.0]


def test_embedded_test_vectors_check_the_file(tmp_path):
    model = _weights_model()
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    model.test_vectors = [TestVector({"x": x}, {"y": x @ model.initializers["w"] + model.initializers["b"]})]
    path = tmp_path / "checked.mkb"
    edge_runtime.format.write(model, path)
    errors = edge_runtime.load(path).self_check()
    assert list(errors) == ["y"] and errors["y"] < 1e-5
