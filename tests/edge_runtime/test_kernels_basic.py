"""Elementwise, reduce, shape, indexing and quantize kernels against the ONNX backend node cases.

Every one-node case of an op these modules implement runs its kernel straight from the registry
(numpy) and is compared with onnx's expected outputs under the onnx runner's tolerances.
"""

import math

import numpy as np
import pytest

from modelkit.edge_runtime.kernels import lookup
from modelkit.edge_runtime.kernels.elementwise import erf_values
from node_cases import (assert_outputs_match, run_single_node, single_node_cases,
                        tensor_element_types)

ELEMENTWISE_OPS = (
    "Add Sub Mul Div Pow Neg Abs Sqrt Reciprocal Exp Log Erf Tanh Sigmoid Relu LeakyRelu Elu Selu "
    "HardSigmoid HardSwish Gelu Softplus Softsign PRelu ThresholdedRelu Celu Mish Clip Floor Ceil "
    "Round Sign Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Min Max Mean Sum Mod Equal "
    "Less Greater LessOrEqual GreaterOrEqual Not And Or Xor Where IsNaN IsInf Cast CastLike "
    "Identity BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot Shrink"
).split()
REDUCE_OPS = (
    "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceSumSquare ReduceLogSumExp ArgMax ArgMin"
).split()
SHAPE_OPS = (
    "Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Expand Tile Pad Shape Size "
    "ConstantOfShape Range Constant DepthToSpace SpaceToDepth Trilu"
).split()
INDEXING_OPS = (
    "Gather GatherElements GatherND ScatterND ScatterElements OneHot NonZero TopK CumSum Compress "
    "Unique"
).split()
QUANTIZE_OPS = ["QuantizeLinear", "DequantizeLinear"]
OWNED_OPS = ELEMENTWISE_OPS + REDUCE_OPS + SHAPE_OPS + INDEXING_OPS + QUANTIZE_OPS

CASES = single_node_cases(OWNED_OPS)
# Element types the .mkb format and runtime compute with (ONNX TensorProto names).
RUNTIME_TYPES = {"FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8",
                 "UINT16", "UINT32", "UINT64", "BOOL", "STRING"}

# Producing an element type the runtime has no dtype for (float8, int4, bfloat16, ...) is out of
# scope; reading one through numpy's astype happens to work and those cases run.
SKIPPED = {
    c.name: f"outputs element types {sorted(unsupported)}, which the runtime does not support"
    for c in CASES
    if (unsupported := tensor_element_types(c.model.graph.output) - RUNTIME_TYPES - {""})
}


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=SKIPPED[c.name])]
                 if c.name in SKIPPED else []) for c in CASES])
def test_node_case(case):
    for outputs, expected in run_single_node(case, lookup):
        assert_outputs_match(case, outputs, expected)


def test_node_cases_on_cupy():
    """The same cases on the GPU array module, where cupy is installed (collected as one test
    so that machines without a GPU pay nothing)."""
    cupy = pytest.importorskip("cupy")
    failures = {}
    for case in CASES:
        if case.name in SKIPPED:
            continue
        try:
            for outputs, expected in run_single_node(case, lookup, xp=cupy):
                assert_outputs_match(case, outputs, expected)
        except Exception as error:  # noqa: BLE001  (collect every failure, report them all)
            failures[case.name] = f"{type(error).__name__}: {str(error)[:200]}"
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))


def test_erf_matches_math_erf_in_float32():
    x = np.linspace(-6, 6, 24001, dtype=np.float32)
    reference = np.array([math.erf(float(v)) for v in x])
    got = erf_values(np, x)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - reference)) < 4e-7


def _onnxruntime_single_node(op_type, inputs, attrs, opset, n_outputs):
    """Run one node in onnxruntime: the oracle for opset forms the node cases do not cover."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import ValueInfoProto, helper, shape_inference

    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    while names and not names[-1]:
        names.pop()
    feeds = {n: np.asarray(x) for n, x in zip(names, inputs) if n}
    outputs = [f"out{i}" for i in range(n_outputs)]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, outputs, **attrs)], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
         for n, x in feeds.items()],
        [ValueInfoProto(name=n) for n in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = shape_inference.infer_shapes(model, strict_mode=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


_X = np.random.default_rng(0).standard_normal((2, 1, 3, 4)).astype(np.float32)
_I64 = np.int64

# (op, opset, inputs, attributes): older opset forms (attributes where inputs came later) and
# edge cases that the node cases leave out; onnxruntime gives the expected output.
ORT_CASES = [
    ("Squeeze", 11, [_X], {"axes": [1]}),
    ("Unsqueeze", 11, [_X], {"axes": [0, -1]}),
    ("Squeeze", 13, [_X, None], {}),
    ("Slice", 9, [_X], {"starts": [0, 1], "ends": [100, -1], "axes": [2, 3]}),
    ("Slice", 13, [_X, _I64([-1, 10]), _I64([-100, 0]), _I64([3, 2]), _I64([-1, -2])], {}),
    ("Pad", 2, [_X], {"pads": [0, 0, 1, 2, 0, 0, 2, 1], "mode": "reflect"}),
    ("Pad", 13, [_X, _I64([0, 0, -1, 2, 0, 0, 1, -2]), np.float32(3.5)], {}),
    ("Pad", 13, [_X, _I64([0, 0, 1, 2, 0, 0, 1, 3])], {"mode": "edge"}),
    ("ReduceSum", 11, [_X], {"axes": [1, -1], "keepdims": 0}),
    ("ReduceMean", 13, [_X], {"axes": [2]}),
    ("ReduceLogSumExp", 13, [_X * 50], {"axes": [3]}),
    ("ReduceMax", 13, [_X], {}),
    ("ReduceL2", 18, [_X, _I64([0, 2])], {"keepdims": 0}),
    ("Clip", 6, [_X], {"min": -0.5, "max": 0.25}),
    ("Clip", 13, [_X, None, np.float32(0.1)], {}),
    ("Split", 11, [_X], {"axis": 3, "split": [1, 3]}),
    ("Split", 13, [_X], {"axis": 3}),
    ("Div", 13, [_I64([7, -7, 7, -7]), _I64([2, 2, -2, -2])], {}),
    ("Mod", 13, [np.int32([7, -7, 7, -7]), np.int32([3, 3, -3, -3])], {}),
    ("Mod", 13, [np.float32([7.5, -7.5]), np.float32([2, 2])], {"fmod": 1}),
    ("Pow", 13, [np.int32([2, 3]), np.float32([2.0, 0.5])], {}),
    ("Cast", 13, [np.float32([1.9, -1.9, 300.0])], {"to": 3}),
    ("Cast", 13, [np.float32([0.1, 70000.0])], {"to": 10}),
    ("Sigmoid", 13, [_X * 40], {}),
    ("Softplus", 13, [_X * 40], {}),
    ("Gelu", 20, [_X * 4], {"approximate": "tanh"}),
    ("TopK", 11, [np.float32([[3, 1, 3, 2, 3]]), _I64([3])], {"axis": 1}),
    ("TopK", 11, [np.float32([[3, 1, 3, 1, 3]]), _I64([3])], {"axis": 1, "largest": 0}),
    ("Gather", 13, [_X, _I64([[-1, 0]])], {"axis": 2}),
    ("ScatterElements", 18, [np.zeros((2, 3), np.float32), _I64([[1, 1], [0, -1]]),
                             np.float32([[1, 2], [3, 4]])], {"axis": 1, "reduction": "add"}),
    ("QuantizeLinear", 13, [_X, np.float32([0.1, 0.2, 0.3]), np.int8([0, 5, -5])], {"axis": 2}),
    ("DequantizeLinear", 13, [np.uint8([[0, 255], [128, 7]]), np.float32([0.5, 2]),
                              np.uint8([128, 0])], {"axis": 1}),
    ("Range", 13, [np.float32(1), np.float32(2), np.float32(0.3)], {}),
    ("CumSum", 14, [_X, _I64(2)], {"exclusive": 1, "reverse": 1}),
    ("Expand", 13, [np.float32([[1], [2]]), _I64([3, 1, 4])], {}),
]


# ops whose output count is not 1 in ORT_CASES
N_OUTPUTS = {"Split": 2, "TopK": 2}


@pytest.mark.parametrize("op_type, opset, inputs, attrs", ORT_CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(ORT_CASES)])
def test_matches_onnxruntime(op_type, opset, inputs, attrs):
    n_outputs = N_OUTPUTS.get(op_type, 1)
    expected = _onnxruntime_single_node(op_type, inputs, attrs, opset, n_outputs)
    entry = lookup("", op_type, opset)
    kwargs = dict(attrs, n_outputs=n_outputs) if entry.wants_n_outputs else attrs
    inputs = [np.asarray(x) if x is not None else None for x in inputs]
    got = entry.fn(np, *inputs, **kwargs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g.dtype, g.shape) == (e.dtype, e.shape)
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


FLOAT_UNARY_OPS = ["Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Tanh", "Sigmoid",
                   "Relu", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus",
                   "Softsign", "ThresholdedRelu", "Celu", "Mish", "Floor", "Ceil", "Round",
                   "Sign", "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh", "Shrink"]


@pytest.mark.parametrize("op_type", FLOAT_UNARY_OPS + ["Gelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(2, 1, 3, 4), ()], ids=["4d", "scalar"])
def test_unary_keeps_float_dtype_shape_and_input(op_type, dtype, shape):
    x = (np.abs(_X).reshape(-1)[:math.prod(shape)].reshape(shape) + 0.5).astype(dtype)
    before = x.copy()
    (y,) = lookup("", op_type, 20).fn(np, x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(x, before)


def _erf(x):
    return np.vectorize(math.erf)(x)


# float64 references written independently of the kernels
FLOAT64_REFERENCES = {
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "Softplus": lambda x: np.log1p(np.exp(x)),
    "Softsign": lambda x: x / (1 + np.abs(x)),
    "Erf": _erf,
    "Gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "Mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "Elu": lambda x: np.where(x < 0, np.expm1(x), x),
    "Celu": lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(x)),
    "Selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "HardSigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "HardSwish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
}


@pytest.mark.parametrize("op_type", sorted(FLOAT64_REFERENCES))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_activation_accuracy_against_float64(op_type, dtype):
    x = np.linspace(-12, 12, 4001).astype(dtype)
    expected = FLOAT64_REFERENCES[op_type](x.astype(np.float64))
    (got,) = lookup("", op_type, 20).fn(np, x)
    rtol = 1e-3 if dtype == np.float16 else 2e-6
    # 1 + erf(x / sqrt 2) cancels for x << 0, in onnxruntime's formula as in ours
    atol = 1e-6 if op_type == "Gelu" else 1e-7
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol, atol=atol)


def test_scatter_and_expand_leave_inputs_alone_and_return_writable_arrays():
    data = np.zeros((2, 3), np.float32)
    (scattered,) = lookup("", "ScatterND", 18).fn(np, data, _I64([[0, 1]]), np.float32([5]))
    assert scattered[0, 1] == 5 and not data.any()
    (expanded,) = lookup("", "Expand", 13).fn(np, np.float32([1, 2]), _I64([3, 2]))
    assert expanded.flags.writeable and expanded.shape == (3, 2)
