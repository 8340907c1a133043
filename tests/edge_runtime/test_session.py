"""Session behaviour on in-memory Models: graph checks at load, feed validation, execution plan
(release at last use, omitted inputs, Constant folding), errors, threads, profiling, memory
report, self check and custom kernels. Oracles are numpy written here."""

from __future__ import annotations

import json
import threading
import weakref

import numpy as np
import pytest

from modelkit import edge_runtime
from modelkit.edge_runtime import (InvalidInputError, KernelError, ModelFormatError, Session,
                                   TensorSpec, UnsupportedOpError, register_kernel)
from modelkit.edge_runtime.errors import EdgeRuntimeError
from modelkit.edge_runtime.format.model import Model, Node, TestVector, ValueInfo
from modelkit.edge_runtime.graph_check import graph_problems
from modelkit.edge_runtime.kernels import registry

DOMAIN = "test.session"
OPSETS = {"": 17, DOMAIN: 1}


def _fail(xp, x):
    raise ValueError("deliberate failure")


register_kernel(DOMAIN, "Fail", _fail)
register_kernel(DOMAIN, "NotTuple", lambda xp, x: x)
register_kernel(DOMAIN, "Scale", lambda xp, x, *, factor=1.0: (x * xp.asarray(factor, x.dtype),))
register_kernel(DOMAIN, "Optional", lambda xp, a, b=None, c=None: (
    a + (0 if b is None else b) + (100 if c is None else c),))
registry.register("SplitN", lambda xp, x, *, n_outputs: tuple(xp.array_split(x, n_outputs)),
                  domain=DOMAIN, wants_n_outputs=True)


def _vi(name, shape=("n",), dtype="float32"):
    return ValueInfo(name, dtype, shape)


def _model(nodes, inputs=("x",), outputs=("y",), shape=("n",), **kw):
    kw.setdefault("opsets", OPSETS)
    return Model(inputs=[_vi(n, shape) for n in inputs], outputs=[_vi(n, shape) for n in outputs],
                 nodes=nodes, **kw)


def _mlp():
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w2 = rng.standard_normal((8, 3)).astype(np.float32)
    model = Model(
        inputs=[_vi("x", ("batch", 4))], outputs=[_vi("y", ("batch", 3))],
        nodes=[Node("MatMul", ["x", "w1"], ["h"], name="fc1"), Node("Add", ["h", "b1"], ["hb"]),
               Node("Relu", ["hb"], ["r"], name="relu"), Node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        initializers={"w1": w1, "b1": b1, "w2": w2})

    def reference(x):
        return np.maximum(x @ w1 + b1, 0) @ w2
    return model, reference


# --- load: graph checks ---------------------------------------------------------------------

def test_graph_problems_names_every_problem_at_once():
    model = _model([Node("Add", ["x", "c"], ["a"], name="A"), Node("Mul", ["a", "x"], ["b"], name="B"),
                    Node("Relu", ["b"], ["c"], name="C"), Node("Relu", ["d"], ["e"]),
                    Node("Neg", ["x"], ["d"]), Node("Relu", ["ghost"], ["y"], name="dangling"),
                    Node("Relu", ["x"], ["y"], name="twice"), Node("NoSuchOp", ["x"], ["z"], name="odd")],
                   outputs=("y", "never"))
    problems = graph_problems(model)
    assert "cycle: 'A' (Add) -> 'B' (Mul) -> 'C' (Relu) -> 'A' (Add)" in problems
    assert ("node #3 Relu: input 'd' is produced later by node #4 Neg (nodes are not in"
            " topological order)") in problems
    assert ("node 'dangling' (Relu): input 'ghost' is not produced by any node, graph input or"
            " initializer") in problems
    assert "node 'twice' (Relu): output 'y' is already produced by node 'dangling' (Relu)" in problems
    assert "graph output 'never' is not produced by any node, graph input or initializer" in problems
    assert "node 'odd' (NoSuchOp): unsupported op NoSuchOp at opset 17" in problems
    assert len(problems) == 6


def test_graph_problems_is_empty_for_a_sound_graph():
    assert graph_problems(_mlp()[0]) == []


def test_malformed_graph_raises_model_format_error_listing_all_problems():
    model = _model([Node("Relu", ["ghost"], ["t"]), Node("Relu", ["t"], ["t"])])
    with pytest.raises(ModelFormatError) as info:
        Session(model)
    message = str(info.value)
    assert "input 'ghost' is not produced" in message
    assert "output 't' is already produced" in message
    assert "graph output 'y' is not produced" in message


def test_unsupported_ops_are_all_listed():
    model = _model([Node("Frobnicate", ["x"], ["a"]), Node("Relu", ["a"], ["b"]),
                    Node("Wibble", ["b"], ["y"], domain="other.domain")], opsets={"": 17, "other.domain": 3})
    with pytest.raises(UnsupportedOpError) as info:
        Session(model)
    assert info.value.missing == ["Frobnicate", "other.domain::Wibble"]
    assert "#0 Frobnicate" in str(info.value) and "#2 Wibble" in str(info.value)


def test_op_newer_than_the_model_opset_is_unsupported():
    register_kernel(DOMAIN, "Late", lambda xp, x: (x,), since=5)
    with pytest.raises(UnsupportedOpError, match="test.session::Late at opset 1"):
        Session(_model([Node("Late", ["x"], ["y"], domain=DOMAIN)]))


def test_attribute_the_kernel_does_not_take_is_reported_at_load():
    model = _model([Node("Relu", ["x"], ["y"], attrs={"alpha": 0.5}, name="r")])
    with pytest.raises(UnsupportedOpError, match=r"'r' \(Relu\): its kernel does not take attribute\(s\) \['alpha'\]"):
        Session(model)


def test_unknown_devices_are_refused():  # "cuda" without cupy or a GPU: tests/gpu
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        Session(_mlp()[0], device="tpu")


# --- specs and feeds --------------------------------------------------------------------------

def test_specs_are_named_tuples_with_symbolic_dims_by_name():
    sess = Session(_mlp()[0])
    assert sess.inputs == [TensorSpec("x", "float32", ("batch", 4))]
    assert sess.outputs[0].shape == ("batch", 3) and sess.outputs[0].dtype == "float32"


def test_run_matches_numpy_and_accepts_noncontiguous_readonly_inputs():
    model, reference = _mlp()
    sess = Session(model)
    x = np.random.default_rng(1).standard_normal((8, 6)).astype(np.float32)[::2, 1:5]
    x.flags.writeable = False
    got = sess.run({"x": x})
    np.testing.assert_allclose(got["y"], reference(x), rtol=1e-5, atol=1e-6)
    assert got["y"].dtype == np.float32


@pytest.mark.parametrize("feeds, message", [
    ({"x": np.zeros((2, 4), np.float64)}, "input 'x': expected dtype float32, got float64"),
    ({"x": np.zeros((2, 4, 1), np.float32)}, r"input 'x': expected rank 2 \(shape \('batch', 4\)\), got shape \(2, 4, 1\)"),
    ({"x": np.zeros((2, 5), np.float32)}, r"input 'x': dim 1 must be 4 \(expected shape \('batch', 4\)\), got shape \(2, 5\)"),
    ({}, r"missing input 'x' \(float32\['batch', 4\]\)"),
    ({"x": np.zeros((2, 4), np.float32), "z": 1}, r"unknown input\(s\) \['z'\]; the model's inputs are \['x'\]"),
    ({"x": [[1, 2, 3, 4.5]]}, None),
    ([np.zeros((2, 4), np.float32)], "feeds must be a dict"),
])
def test_bad_feeds_raise_invalid_input_error(feeds, message):
    sess = Session(_mlp()[0])
    if message is None:  # a list of Python floats converts to the float32 input
        assert sess.run(feeds)["y"].shape == (1, 3)
        return
    with pytest.raises(InvalidInputError, match=message):
        sess.run(feeds)


def test_python_lists_convert_only_without_loss():
    sess = Session(_model([Node("Identity", ["x"], ["y"])], shape=("n",)))
    assert sess.run({"x": [1, 2, 3]})["y"].dtype == np.float32  # ints into a float input
    int_sess = Session(Model(inputs=[_vi("x", ("n",), "int64")], outputs=[_vi("y", ("n",), "int64")],
                             nodes=[Node("Identity", ["x"], ["y"])]))
    with pytest.raises(InvalidInputError, match="expected dtype int64, got a list of float64"):
        int_sess.run({"x": [1.5, 2.0]})


def test_symbolic_dims_must_agree_across_inputs():
    sess = Session(_model([Node("Add", ["a", "b"], ["y"])], inputs=("a", "b")))
    assert sess.run({"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)})["y"].tolist() == [2, 2, 2]
    with pytest.raises(InvalidInputError, match=r"input 'b': dim 0 \('n'\) is 2, but input 'a' dim 0 \('n'\) is 3"):
        sess.run({"a": np.ones(3, np.float32), "b": np.ones(2, np.float32)})


def test_requested_outputs_subset_and_unknown_output():
    model = _model([Node("Neg", ["x"], ["y"]), Node("Abs", ["x"], ["z"])], outputs=("y", "z"))
    sess = Session(model)
    x = np.array([-1.0, 2.0], np.float32)
    assert list(sess.run({"x": x}, ["z"])) == ["z"]
    assert sess.run({"x": x}, ["z"])["z"].tolist() == [1, 2]
    with pytest.raises(InvalidInputError, match=r"unknown output\(s\) \['w'\]"):
        sess.run({"x": x}, ["w"])


# --- execution plan ---------------------------------------------------------------------------

def test_intermediates_are_released_after_their_last_reader():
    seen = {}

    def keep(xp, x):
        out = x + 1
        seen["first"] = weakref.ref(out)
        return (out,)

    def probe(xp, x):
        seen["alive_at_probe"] = seen["first"]() is not None
        return (x,)

    register_kernel(DOMAIN, "Keep", keep)
    register_kernel(DOMAIN, "Probe", probe)
    model = _model([Node("Keep", ["x"], ["a"], domain=DOMAIN), Node("Neg", ["a"], ["b"]),
                    Node("Probe", ["b"], ["y"], domain=DOMAIN)])
    Session(model).run({"x": np.zeros(2, np.float32)})
    assert seen["alive_at_probe"] is False


def test_omitted_optional_inputs_arrive_as_none():
    model = _model([Node("Optional", ["x", "", "x"], ["a"], domain=DOMAIN),
                    Node("Optional", ["a"], ["y"], domain=DOMAIN)])
    x = np.array([1.0], np.float32)
    assert Session(model).run({"x": x})["y"].tolist() == [1 + 1 + 100]


def test_kernels_that_want_their_output_count_get_it_and_unused_outputs_are_dropped():
    model = _model([Node("SplitN", ["x"], ["p", "", "r"], domain=DOMAIN)], outputs=("p", "r"))
    got = Session(model).run({"x": np.arange(6, dtype=np.float32)})
    assert got["p"].tolist() == [0, 1] and got["r"].tolist() == [4, 5]


def test_constant_nodes_are_folded_once_and_cannot_be_corrupted_through_outputs():
    value = np.array([1.0, 2.0], np.float32)
    model = _model([Node("Constant", [], ["c"], attrs={"value": value}), Node("Add", ["x", "c"], ["y"])],
                   outputs=("y", "c"))
    sess = Session(model)
    assert sess._plan.steps[0][0].func is registry.lookup("", "Add", 17).fn
    got = sess.run({"x": np.zeros(2, np.float32)})
    with pytest.raises(ValueError):
        got["c"][0] = 5.0
    assert sess.run({"x": np.zeros(2, np.float32)})["y"].tolist() == [1, 2]


def test_graph_output_can_be_an_input_or_an_initializer():
    w = np.array([3.0], np.float32)
    model = Model(inputs=[_vi("x", (1,))], outputs=[_vi("x", (1,)), _vi("w", (1,))], nodes=[],
                  initializers={"w": w})
    got = Session(model).run({"x": np.array([1.0], np.float32)})
    assert got["x"].tolist() == [1.0] and got["w"].tolist() == [3.0]


# --- errors from kernels ----------------------------------------------------------------------

def test_kernel_failure_names_node_op_inputs_and_chains_the_cause():
    model = _model([Node("Neg", ["x"], ["a"]), Node("Fail", ["a"], ["y"], name="boom", domain=DOMAIN,
                                                    source="net.py:12")])
    with pytest.raises(KernelError) as info:
        Session(model).run({"x": np.zeros((3,), np.float32)})
    message = str(info.value)
    assert "node 'boom' (Fail) failed: ValueError: deliberate failure" in message
    assert "inputs: a: float32[3]" in message and "source: net.py:12" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_kernel_returning_something_else_than_a_tuple_is_a_kernel_error():
    with pytest.raises(KernelError, match="the kernel returned a ndarray, expected a tuple of 1"):
        Session(_model([Node("NotTuple", ["x"], ["y"], domain=DOMAIN)])).run({"x": np.zeros(1, np.float32)})


# --- threads ----------------------------------------------------------------------------------

def test_one_session_from_eight_threads_gives_every_caller_its_own_result():
    model, reference = _mlp()
    sess = Session(model)
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((int(rng.integers(1, 9)), 4)).astype(np.float32) for _ in range(8)]
    errors, barrier = [], threading.Barrier(8)

    def worker(x):
        barrier.wait()
        for _ in range(50):
            y = sess.run({"x": x})["y"]
            if y.shape != (x.shape[0], 3) or not np.allclose(y, reference(x), rtol=1e-5, atol=1e-6):
                errors.append((x.shape, y.shape))
                return

    threads = [threading.Thread(target=worker, args=(x,)) for x in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- profiling, memory report, self check ------------------------------------------------------

def test_profile_records_every_node_of_every_run_and_saves_chrome_trace(tmp_path):
    sess = Session(_mlp()[0], profile=True)
    for batch in (2, 5):
        sess.run({"x": np.ones((batch, 4), np.float32)})
    records = sess.profile()
    # fc1's MatMul and its bias Add run as one fused step, named after the Add
    assert [(r.run, r.node, r.op_type) for r in records[:3]] == [
        (0, "#1 Add", "MatMul+Add"), (0, "relu", "Relu"), (0, "fc2", "MatMul")]
    assert len(records) == 6 and all(r.duration_ns > 0 for r in records)
    assert records[3].input_shapes == ((5, 4), (4, 8), (8,)) and records[3].output_shapes == ((5, 8),)
    path = tmp_path / "trace.json"
    sess.save_profile(path)
    events = json.loads(path.read_text())["traceEvents"]
    assert len(events) == 6 and {e["ph"] for e in events} == {"X"}
    assert events[5]["name"] == "fc2" and events[5]["ts"] >= events[4]["ts"] + events[4]["dur"]
    assert events[5]["dur"] == pytest.approx(records[5].duration_ns / 1000)


def test_profile_needs_profiling_on():
    with pytest.raises(EdgeRuntimeError, match="profile=True"):
        Session(_mlp()[0]).profile()


def test_memory_report_counts_weights_and_measures_the_activation_peak():
    model, _ = _mlp()
    report = Session(model).memory_report({"batch": 10})
    assert report.weight_bytes == (4 * 8 + 8 + 8 * 3) * 4
    assert report.weight_bytes_by_dtype == {"float32": (4 * 8 + 8 + 8 * 3) * 4}
    # peak after fc1: x (10x4) and h (10x8) are alive; the Add then writes hb into h's buffer
    # (h dies there), so it never holds two 10x8 arrays at once
    assert report.peak_activation_bytes == (10 * 4 + 10 * 8) * 4
    assert report.dims == {"batch": 10}
    assert Session(model).memory_report().dims == {"batch": 1}


def test_self_check_reports_max_error_per_output():
    model, reference = _mlp()
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    model.test_vectors = [TestVector({"x": x}, {"y": reference(x) + np.float32(0.25)})]
    assert Session(model).self_check()["y"] == pytest.approx(0.25, abs=1e-5)
    model.test_vectors = []
    with pytest.raises(EdgeRuntimeError, match="no test vectors"):
        Session(model).self_check()


def test_package_exports_the_public_api():
    for name in ("load", "load_onnx", "Session", "TensorSpec", "register_kernel", "ModelFormatError",
                 "InvalidInputError", "UnsupportedOpError", "KernelError", "format"):
        assert hasattr(edge_runtime, name), name
