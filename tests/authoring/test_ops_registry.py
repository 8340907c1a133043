"""The op registry: one row per primitive with forward, vjp and ONNX lowering; the tracer
hook sees every primitive call made through operators, methods, mk.* and F.*."""

import modelkit.authoring as mk
import modelkit.authoring.nn.functional as F
from modelkit.authoring.ops import registry
from modelkit.authoring.ops.registry import OPS, Attr, Onnx, onnx_lowering

EXPECTED_ONNX = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "neg": "Neg",
    "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "sin": "Sin",
    "cos": "Cos", "tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "erf": "Erf",
    "matmul": "MatMul", "sum": "ReduceSum", "mean": "ReduceMean", "amax": "ReduceMax",
    "amin": "ReduceMin", "permute": "Transpose", "reshape": "Reshape", "cat": "Concat",
    "where": "Where", "eq": "Equal", "lt": "Less", "gt": "Greater", "softmax": "Softmax",
    "log_softmax": "LogSoftmax", "conv": "Conv", "max_pool": "MaxPool",
    "avg_pool": "AveragePool", "conv_transpose": "ConvTranspose", "linear": "Gemm",
    "layer_norm": "LayerNormalization", "batch_norm": "BatchNormalization",
    "gather": "GatherElements", "index_select": "Gather", "leaky_relu": "LeakyRelu",
    "clamp": "Clip", "cast": "Cast", "expand": "Expand", "split": "Split",
}


def test_registry_rows_hold_forward_backward_and_onnx_lowering():
    assert len(OPS) > 60
    for name, op in OPS.items():
        assert op.name == name and callable(op.forward)
        assert all(isinstance(spec, Onnx) for spec in op.onnx)
        assert [s.since for s in op.onnx] == sorted(s.since for s in op.onnx)
    for name, op_type in EXPECTED_ONNX.items():
        assert onnx_lowering(OPS[name], 17).op_type == op_type, name
    assert onnx_lowering(OPS["leaky_relu"], 17).attributes == {"alpha": Attr("negative_slope")}
    assert onnx_lowering(OPS["softmax"], 17).attributes == {"axis": Attr("dim")}
    assert not OPS["argmax"].differentiable and OPS["mul"].differentiable


def test_onnx_lowering_picks_the_newest_form_not_above_the_opset():
    mean = OPS["mean"]
    assert onnx_lowering(mean, 17).attributes == {"axes": Attr("dim"),
                                                  "keepdims": Attr("keepdim")}
    assert onnx_lowering(mean, 18).inputs_from_attrs == ("dim",)
    assert onnx_lowering(OPS["sum"], 13).inputs_from_attrs == ("dim",)
    assert onnx_lowering(OPS["gelu"], 17) is None
    assert onnx_lowering(OPS["gelu"], 20).op_type == "Gelu"
    assert onnx_lowering(OPS["index"], 17) is None


def _trace(fn):
    calls = []
    registry.tracer = lambda op, inputs, attrs, outputs: calls.append(
        (op.name, len(inputs), dict(attrs), len(outputs)))
    try:
        fn()
    finally:
        registry.tracer = None
    return calls


def test_tracer_hook_sees_every_primitive_call():
    x = mk.ones(2, 3, requires_grad=True)
    w = mk.ones(4, 3)
    calls = _trace(lambda: F.softmax(F.relu(F.linear(x, w)) @ mk.ones(4, 2) + 1, dim=-1).sum())
    assert [c[0] for c in calls] == ["linear", "relu", "matmul", "add", "softmax", "sum"]
    assert calls[0][1] == 3  # x, weight, omitted bias (None)
    assert calls[4][2] == {"dim": 1}
    assert _trace(lambda: x.transpose(0, 1))[0][2] == {"dims": (1, 0)}


def test_tracer_hook_also_sees_calls_under_no_grad_and_inside_custom_functions():
    class Double(mk.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    with mk.no_grad():
        assert [c[0] for c in _trace(lambda: mk.ones(1).exp())] == ["exp"]
    assert [c[0] for c in _trace(lambda: Double.apply(mk.ones(1, requires_grad=True)))] == [
        "mul"]


def test_tracer_hook_reports_in_place_updates():
    x = mk.zeros(3)
    calls = _trace(lambda: (x.add_(1), x.__setitem__(0, 5.0)))
    assert [c[0] for c in calls] == ["add", "inplace_assign", "index_put", "inplace_assign"]
    assert x.tolist() == [5.0, 1.0, 1.0]
