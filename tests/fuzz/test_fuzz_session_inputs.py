"""Fuzz target: `Session.run` feeds.

Random dtypes, ranks and shapes (0-size dims included), non-contiguous views (strided,
transposed, Fortran order, negative strides), read-only arrays, NaN and Inf, Python lists and
scalars, missing, extra and non-str keys. Every case must give `InvalidInputError`, or outputs
equal to onnxruntime's on the same model (NaN where onnxruntime has NaN), with the declared
dtype; the feeds must not be modified.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, strategies as st

from fuzz_settings import fuzz, wall_clock_limit
from real_models import exported_mlp

from modelkit import edge_runtime
from modelkit.edge_runtime import InvalidInputError
from modelkit.edge_runtime.format import Model, Node, ValueInfo, read, write

ort = pytest.importorskip("onnxruntime")

CASE_SECONDS = 5
DTYPES = ["float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool", ">f4",
          "complex64", "U3", "O"]
# Two inputs sharing the symbolic dim "n", an int64 input, and a static dim.
TWO_INPUTS = Model(
    [ValueInfo("a", "float32", ("n", 3)), ValueInfo("b", "float32", ("n", 3)),
     ValueInfo("k", "int64", ("n",))],
    [ValueInfo("s", "float32", ("n", 3)), ValueInfo("k2", "int64", ("n",))],
    [Node("Add", ["a", "b"], ["s"]), Node("Mul", ["k", "k"], ["k2"])])


def _onnx_session(mkb: bytes):
    from modelkit.exporter import onnx_writer
    from modelkit.exporter.ir import Graph

    proto = onnx_writer.to_proto(Graph.from_model(read(mkb)))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


MODELS = {"mlp": exported_mlp()[0], "two_inputs": write(TWO_INPUTS)}
SESSIONS = {name: edge_runtime.load(data) for name, data in MODELS.items()}
ORACLES = {name: _onnx_session(data) for name, data in MODELS.items()}


@st.composite
def arrays(draw, spec):
    """An array near `spec` (a TensorSpec): often right, often wrong in one way."""
    right_dtype = draw(st.booleans())
    dtype = np.dtype(spec.dtype if right_dtype else draw(st.sampled_from(DTYPES)))
    shape = [draw(st.integers(0, 4)) if isinstance(d, str) else d for d in spec.shape]
    if draw(st.integers(0, 3)) == 0:
        shape = draw(st.lists(st.integers(0, 5), max_size=4))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "transposed", "reversed"]))
    # Draw the base large enough for a strided view, then take the view of `shape`.
    factor = 2 if layout == "strided" else 1
    base_shape = [s * factor for s in shape]
    values = draw(st.lists(st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 3.0]),
                           min_size=1, max_size=4))
    count = int(np.prod(base_shape))
    with np.errstate(invalid="ignore", over="ignore"):
        flat = np.resize(np.array(values), count) if count else np.zeros(0)
        if dtype.kind in "biu":
            flat = np.nan_to_num(flat, nan=0.0, posinf=7.0, neginf=-7.0)
        base = flat.astype(dtype).reshape(base_shape)
    if layout == "fortran":
        array = np.asfortranarray(base)
    elif layout == "strided":
        array = base[(*(slice(None, None, 2) for _ in shape), ...)]
    elif layout == "transposed" and len(shape) >= 2:
        array = np.ascontiguousarray(base.swapaxes(0, 1)).swapaxes(0, 1)
    elif layout == "reversed":
        array = base[(*(slice(None, None, -1) for _ in shape), ...)]
    else:
        array = base
    if draw(st.booleans()):
        array.flags.writeable = False
    if draw(st.integers(0, 5)) == 0:
        return array.tolist()
    return array


@st.composite
def feeds_for(draw, name):
    session = SESSIONS[name]
    feeds = {spec.name: draw(arrays(spec)) for spec in session.inputs}
    change = draw(st.integers(0, 9))
    if change == 0 and feeds:
        del feeds[draw(st.sampled_from(sorted(feeds)))]
    elif change == 1:
        feeds[draw(st.sampled_from(["extra", 1, None]))] = np.zeros(1, np.float32)
    return feeds


def _expected_dtype_and_shape(session, feeds) -> bool:
    """Whether the feeds match the spec, so a run must succeed."""
    bound = {}
    for spec in session.inputs:
        value = feeds.get(spec.name)
        if not isinstance(value, np.ndarray) or value.dtype != np.dtype(spec.dtype):
            return False
        if value.ndim != len(spec.shape):
            return False
        for size, dim in zip(value.shape, spec.shape):
            if isinstance(dim, str):
                if bound.setdefault(dim, size) != size:
                    return False
            elif size != dim:
                return False
    return set(feeds) == {spec.name for spec in session.inputs}


def _contents(array: np.ndarray):
    """Bytes of the values (reprs for object arrays, whose NaNs never compare equal)."""
    return [repr(v) for v in array.ravel()] if array.dtype == object else array.tobytes()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and Inf feeds on purpose
@fuzz(300)
@given(st.sampled_from(sorted(MODELS)).flatmap(lambda n: st.tuples(st.just(n), feeds_for(n))))
def test_run_gives_onnxruntime_results_or_invalid_input_error(case):
    name, feeds = case
    session = SESSIONS[name]
    before = {k: _contents(v) for k, v in feeds.items() if isinstance(v, np.ndarray)}
    with wall_clock_limit(CASE_SECONDS):
        try:
            got = session.run(feeds)
        except InvalidInputError:
            got = None
    assert before == {k: _contents(v) for k, v in feeds.items() if isinstance(v, np.ndarray)}
    event("refused" if got is None else "ran")
    if got is None:
        # A list of the right values converts; only a mismatched array must be refused.
        assert not _expected_dtype_and_shape(session, feeds), feeds
        return
    arrays_fed = {k: np.asarray(v, dtype=session_spec.dtype)
                  for session_spec in session.inputs for k, v in feeds.items()
                  if k == session_spec.name}
    expected = ORACLES[name].run(None, arrays_fed)
    for spec, want in zip(session.outputs, expected):
        have = got[spec.name]
        assert have.dtype == want.dtype and have.shape == want.shape, (have, want)
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6, equal_nan=True)


SMALL_TYPES = ["int8", "uint8", "int32", "float16", "float32"]
IDENTITIES = {dtype: edge_runtime.load(write(Model(
    [ValueInfo("k", dtype, ("n",))], [ValueInfo("y", dtype, ("n",))],
    [Node("Identity", ["k"], ["y"])]))) for dtype in SMALL_TYPES}


def _fits(dtype: str, values: list) -> bool:
    """Whether `values` (all ints or all floats) can be fed to a `dtype` input unchanged."""
    target = np.dtype(dtype)
    if target.kind in "iu":
        info = np.iinfo(target)
        return all(isinstance(v, int) and info.min <= v <= info.max for v in values)
    with np.errstate(over="ignore"):
        return all(np.isfinite(np.float64(v).astype(target)) for v in values)


@fuzz(300)
@given(st.sampled_from(SMALL_TYPES),
       st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1) | st.sampled_from([-129, 128, 255, 256, -1]),
                max_size=4)
       | st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4))
def test_python_numbers_are_fed_exactly_or_refused(dtype, values):
    """Regression: Python ints were wrapped around (300 fed as int8 was 44, 2**40 as int32 was
    0) and huge floats became inf."""
    try:
        got = IDENTITIES[dtype].run({"k": values})["y"]
    except InvalidInputError:
        event("refused")
        assert values and not _fits(dtype, values), (dtype, values)
        return
    event("fed")
    assert _fits(dtype, values) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.array(values, dtype=np.float64 if values and
                                  isinstance(values[0], float) else None).astype(dtype))
