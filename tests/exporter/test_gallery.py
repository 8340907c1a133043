"""A gallery of small models that together call every primitive op of the registry: each is
exported and run in onnxruntime (and the edge runtime) against eager; a test enumerates `OPS`
so an op without an ONNX lowering (and not training-only) fails here."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import modelkit.authoring as mk
from modelkit import edge_runtime
from modelkit.authoring.nn import functional as F
from modelkit.authoring.ops.registry import OPS, apply, onnx_lowering
from modelkit.exporter import export
from modelkit.exporter.export import flat_outputs
from modelkit.exporter.trace import TRAINING_ONLY, probe_run

RNG = np.random.default_rng(0)


def _floats(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


def unary(x):
    pos = x.abs() + 0.5
    return {
        "exp": x.exp(), "log": pos.log(), "log1p": pos.log1p(), "sqrt": pos.sqrt(),
        "reciprocal": pos.reciprocal(), "abs": x.abs(), "sign": x.sign(), "floor": x.floor(),
        "ceil": x.ceil(), "round": (x * 3).round(), "sin": x.sin(), "cos": x.cos(),
        "tanh": x.tanh(), "sigmoid": x.sigmoid(), "relu": x.relu(), "neg": -x,
        "leaky_relu": F.leaky_relu(x, 0.2), "gelu": F.gelu(x), "gelu_tanh": F.gelu(x, "tanh"),
        "softplus": F.softplus(x), "softplus_beta": F.softplus(x, beta=2.0), "erf": x.erf(),
        "clamp": x.clamp(-0.5, 0.7), "clamp_min": x.clamp(min=0.1), "cast": (x * 4).long(),
    }


def binary(a, b, i, j):
    pos = a.abs() + 0.5
    inf = a / (a * 0)  # inf and nan where a == 0 ... and a / 0 elsewhere
    return (a + b, a - b, a * b, a / b, pos ** b, mk.maximum(a, b), mk.minimum(a, b),
            mk.remainder(a, b), mk.floor_divide(a, b), mk.remainder(i, j), i // j,
            a == b.round(), a != b.round(), a < b, a <= b, a > b, a >= b,
            (a > 0) & (b > 0), (a > 0) | (b > 0), (a > 0) ^ (b > 0), ~(a > 0),
            mk.where(a > b, a, b), inf.isnan(), inf.isinf(), inf.isfinite(), i.float() * a)


def reductions(x, flags):
    return (x.sum(), x.sum(dim=1, keepdim=True), x.mean(dim=(0, 2)), x.amax(dim=1), x.amin(),
            x.prod(dim=2), x.logsumexp(dim=-1), x.argmax(), x.argmax(dim=1, keepdim=True),
            x.argmin(dim=2), x.cumsum(dim=1), x.var(dim=1), x.std(), flags.all(),
            flags.any(dim=1), (x > 0).all(dim=(1, 2)))


def shapes(x):
    y = x.reshape(2, 12).permute(1, 0).unsqueeze(0)
    parts = mk.split(x, [1, 2], dim=1)
    return (y, y.squeeze(0), x[:, :1].expand(2, 5, 4), mk.cat(parts[::-1], dim=1),
            mk.stack([x, x], dim=1), x.repeat(2, 1, 1), x.repeat(2, 1, 1, 2), x.clone(),
            x.flatten(1), F.pad(x, (1, 2)), F.pad(x, (1, 1, 1, 0), mode="reflect"),
            F.pad(x, (2, 1), mode="replicate"), x.chunk(2, dim=2)[1], x.transpose(0, 2),
            # the primitive that x.to("cuda") records on a GPU machine (on cpu, .to records none)
            apply(OPS["to_device"], x * 3, device=mk.device("cpu")))


def indexing(x, idx, tokens):
    y = x.clone()
    y[0, 1] = 5.0
    y[:, 2:4] = x[:, :2] * 2
    table = mk.tensor(np.arange(40, dtype=np.float32).reshape(10, 4))
    return (x[1], x[:, 1:5:2], x[..., -1], x[None, :, 3], x[0, None], x[:, [0, 2, 2]],
            x[[1, 0], [3, 4]], x.reshape(2, 2, 3)[:, [0, 1], [2, 0]], x[idx], y,
            x.index_select(1, idx),
            mk.gather(x, 1, mk.tensor([[0, 5], [1, 1]])), F.embedding(tokens, table),
            F.one_hot(tokens, 10), (x > 0).nonzero(), x.masked_fill(x < 0, -1.0))


class Layers(mk.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = mk.nn.Conv2d(2, 4, 3, padding=1, stride=2)
        self.deconv = mk.nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.bn = mk.nn.BatchNorm2d(4)
        self.ln = mk.nn.LayerNorm(5)
        self.ln_plain = mk.nn.LayerNorm(5, elementwise_affine=False)
        self.gn = mk.nn.GroupNorm(2, 4)
        self.fc = mk.nn.Linear(5, 3)
        self.bn.running_mean.copy_(mk.randn(4))
        self.bn.running_var.copy_(mk.rand(4) + 0.5)

    def forward(self, image, seq):
        h = self.bn(self.conv(image))
        return (h, self.deconv(h), F.max_pool2d(image, 2), F.avg_pool2d(image, 3, 1, 1),
                F.adaptive_avg_pool2d(image[:, :, :7, :5], (3, 2)), self.gn(h),
                self.ln(seq), self.ln_plain(seq), self.fc(seq), self.fc(seq[0]),
                F.softmax(seq, -1), F.log_softmax(seq, 1), seq @ seq.transpose(1, 2))


GALLERY = {
    "unary": (unary, (_floats(3, 4),)),
    "binary": (binary, (_floats(3, 4), _floats(3, 4, low=0.5, high=2.0) * np.float32(
        [[1], [-1], [1]]), RNG.integers(-9, 9, (3, 4)), RNG.integers(1, 5, (3, 4)))),
    "reductions": (reductions, (_floats(2, 3, 4), RNG.integers(0, 2, (2, 3)).astype(bool))),
    "shapes": (shapes, (_floats(2, 3, 4),)),
    "indexing": (indexing, (_floats(2, 6), np.array([1, 0, 1]), np.array([[1, 9], [0, 3]]))),
    "layers": (Layers, (_floats(2, 2, 8, 8), _floats(2, 3, 5))),
}


def _model(name):
    maker, inputs = GALLERY[name]
    mk.manual_seed(0)
    return (maker().eval() if isinstance(maker, type) else maker), inputs


def _eager(model, inputs):
    with mk.no_grad():
        return [t.array for _, t in flat_outputs(model(*[mk.tensor(a) for a in inputs]))]


def _assert_close(got, expected, name):
    for k, (have, want) in enumerate(zip(got, expected)):
        assert have.shape == want.shape, f"{name} output {k}: {have.shape} vs {want.shape}"
        assert have.dtype == want.dtype, f"{name} output {k}: {have.dtype} vs {want.dtype}"
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} output {k}", equal_nan=True)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # binary: a / 0 on purpose
@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize("name", sorted(GALLERY))
def test_gallery_model_matches_eager_in_onnxruntime_and_edge_runtime(name, opset, tmp_path):
    model, inputs = _model(name)
    graph = export(model, inputs, tmp_path / "m.onnx", format="both", opset=opset)
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    feeds = {v.name: a for v, a in zip(graph.inputs, inputs)}
    expected = _eager(model, inputs)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    _assert_close(session.run(None, feeds), expected, f"{name} (onnxruntime)")
    outputs = edge_runtime.load(tmp_path / "m.mkb").run(feeds)
    _assert_close([outputs[v.name] for v in graph.outputs], expected, f"{name} (edge runtime)")


def test_gallery_calls_every_op_of_the_registry_except_training_only_ones():
    called = set()
    for name in GALLERY:
        model, inputs = _model(name)
        with mk.no_grad():
            called |= {call.op for call in probe_run(model, [mk.tensor(a) for a in inputs])}
    missing = sorted(set(OPS) - set(TRAINING_ONLY) - called)
    assert not missing, f"no gallery model calls {missing}"


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_every_op_has_an_onnx_lowering_unless_training_only(opset):
    unlowered = [name for name, op in OPS.items()
                 if op.lower is None and onnx_lowering(op, opset) is None
                 and name not in TRAINING_ONLY]
    assert not unlowered, f"ops without an ONNX lowering at opset {opset}: {unlowered}"
    assert all(reason for reason in TRAINING_ONLY.values())
