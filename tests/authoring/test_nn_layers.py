"""Each layer: PyTorch's parameter names, shapes and init ranges; gradcheck in float64 on a
small instance; with torch installed, the same forward and gradients as the PyTorch layer
given the same state dict."""

import math

import numpy as np
import pytest

import modelkit.authoring as mk
from modelkit.authoring import nn


def _float(*shape):
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


def _ints(high, *shape):
    return lambda rng: rng.integers(0, high, shape).astype(np.int64)


# (id, layer name, args, kwargs, input makers, extra call kwargs built from rng)
CASES = [
    ("linear", "Linear", (4, 3), {}, [_float(2, 4)]),
    ("linear-nobias", "Linear", (4, 3), {"bias": False}, [_float(2, 5, 4)]),
    ("conv1d", "Conv1d", (2, 3, 3), {"stride": 2, "padding": 1}, [_float(2, 2, 7)]),
    ("conv2d", "Conv2d", (2, 4, 3), {"stride": 2, "padding": 1}, [_float(2, 2, 5, 5)]),
    ("conv2d-groups", "Conv2d", (4, 4, 3), {"padding": "same", "groups": 2, "bias": False},
     [_float(1, 4, 4, 4)]),
    ("conv-transpose2d", "ConvTranspose2d", (2, 3, 3),
     {"stride": 2, "padding": 1, "output_padding": 1}, [_float(1, 2, 3, 3)]),
    ("batchnorm1d", "BatchNorm1d", (3,), {}, [_float(4, 3)]),
    ("batchnorm2d", "BatchNorm2d", (3,), {}, [_float(2, 3, 3, 3)]),
    ("batchnorm2d-no-bias-momentum-none", "BatchNorm2d", (3,), {"bias": False, "momentum": None},
     [_float(2, 3, 3, 3)]),
    ("layernorm", "LayerNorm", (4,), {}, [_float(2, 3, 4)]),
    ("layernorm-no-bias", "LayerNorm", ((3, 4),), {"bias": False}, [_float(2, 3, 4)]),
    ("groupnorm", "GroupNorm", (2, 4), {}, [_float(2, 4, 3)]),
    ("groupnorm-no-bias", "GroupNorm", (2, 4), {"bias": False}, [_float(2, 4, 3)]),
    ("embedding", "Embedding", (10, 3), {}, [_ints(10, 2, 4)]),
    ("embedding-padded", "Embedding", (10, 3), {"padding_idx": 0}, [_ints(10, 2, 4)]),
    ("relu", "ReLU", (), {}, [_float(2, 5)]),
    ("leaky-relu", "LeakyReLU", (0.2,), {}, [_float(2, 5)]),
    ("gelu", "GELU", (), {}, [_float(2, 5)]),
    ("gelu-tanh", "GELU", (), {"approximate": "tanh"}, [_float(2, 5)]),
    ("silu", "SiLU", (), {}, [_float(2, 5)]),
    ("sigmoid", "Sigmoid", (), {}, [_float(2, 5)]),
    ("tanh", "Tanh", (), {}, [_float(2, 5)]),
    ("softmax", "Softmax", (), {"dim": 1}, [_float(2, 5)]),
    ("log-softmax", "LogSoftmax", (), {"dim": -1}, [_float(2, 5)]),
    ("maxpool2d", "MaxPool2d", (2,), {}, [_float(1, 2, 4, 4)]),
    ("maxpool2d-padded", "MaxPool2d", (3,), {"stride": 2, "padding": 1}, [_float(1, 2, 5, 5)]),
    ("avgpool2d", "AvgPool2d", (2,), {}, [_float(1, 2, 4, 4)]),
    ("avgpool2d-padded", "AvgPool2d", (3,), {"stride": 2, "padding": 1}, [_float(1, 2, 5, 5)]),
    ("adaptive-avgpool2d", "AdaptiveAvgPool2d", ((2, 2),), {}, [_float(1, 2, 4, 4)]),
    ("flatten", "Flatten", (), {}, [_float(2, 3, 2)]),
    ("identity", "Identity", (), {}, [_float(2, 3)]),
    ("mha-batch-first", "MultiheadAttention", (4, 2), {"batch_first": True}, [_float(2, 3, 4)]),
    ("mha-seq-first", "MultiheadAttention", (4, 2), {}, [_float(3, 2, 4), _float(5, 2, 4)]),
    ("encoder-layer", "TransformerEncoderLayer", (4, 2),
     {"dim_feedforward": 6, "dropout": 0.0, "batch_first": True}, [_float(2, 3, 4)]),
    ("encoder-layer-norm-first-gelu", "TransformerEncoderLayer", (4, 2),
     {"dim_feedforward": 6, "dropout": 0.0, "norm_first": True, "activation": "gelu"},
     [_float(3, 2, 4)]),
    ("gru", "GRU", (3, 2), {"num_layers": 2, "batch_first": True, "bidirectional": True},
     [_float(2, 4, 3), _float(4, 2, 2)]),
    ("gru-zero-state-no-bias", "GRU", (3, 2), {"bias": False}, [_float(4, 2, 3)]),
    ("lstm", "LSTM", (3, 2), {"num_layers": 2}, [_float(4, 2, 3)]),
    ("lstm-bidirectional-with-state", "LSTM", (3, 2), {"bidirectional": True},
     [_float(4, 2, 3), _float(2, 2, 2), _float(2, 2, 2)]),
]


def _call_inputs(case_id, arrays):
    if case_id == "mha-seq-first":        # query from the first, key = value from the second
        q, kv = arrays
        return (q, kv, kv), {}
    if case_id == "mha-batch-first":       # self-attention: one tensor as query, key, value
        return (arrays[0],) * 3, {}
    if case_id == "lstm-bidirectional-with-state":
        x, h0, c0 = arrays
        return (x, (h0, c0)), {}
    return tuple(arrays), {}


def _floats_of(output):
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _floats_of(o)]
    return [] if output is None else [output]


def _ours(name, args, kwargs):
    return getattr(nn, name)(*args, **kwargs)


# The padding row deliberately gets no gradient, so finite differences cannot agree there.
GRADCHECK_CASES = [c for c in CASES if c[0] != "embedding-padded"]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES])
def test_gradcheck_float64(case):
    case_id, name, args, kwargs, makers = case
    mk.manual_seed(0)
    rng = np.random.default_rng(0)
    layer = _ours(name, args, kwargs).double()
    arrays = [m(rng) for m in makers]
    arrays = [a.astype(np.float64) if a.dtype == np.float32 else a for a in arrays]
    inputs = [mk.tensor(a, requires_grad=a.dtype == np.float64) for a in arrays]
    call_args, call_kwargs = _call_inputs(case_id, inputs)
    params = list(layer.parameters())

    def run(*_):
        return tuple(_floats_of(layer(*call_args, **call_kwargs)))

    checked = [t for t in inputs if t.requires_grad] + params
    if not checked:
        pytest.skip("no differentiable inputs")
    assert mk.autograd.gradcheck(run, checked, atol=1e-5, rtol=1e-3)


def _torch_layer(torch, name, args, kwargs, ours):
    layer = getattr(torch.nn, name)(*args, **kwargs)
    state = {k: torch.from_numpy(np.array(v.numpy())) for k, v in ours.state_dict().items()}
    layer.load_state_dict(state)
    return layer


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_forward_and_gradients_as_pytorch(case):
    torch = pytest.importorskip("torch")
    case_id, name, args, kwargs, makers = case
    mk.manual_seed(1)
    rng = np.random.default_rng(1)
    ours = _ours(name, args, kwargs)
    theirs = _torch_layer(torch, name, args, kwargs, ours)
    arrays = [m(rng) for m in makers]
    our_inputs = [mk.tensor(a, requires_grad=a.dtype == np.float32) for a in arrays]
    their_inputs = [torch.tensor(a, requires_grad=a.dtype == np.float32) for a in arrays]
    our_args, call_kwargs = _call_inputs(case_id, our_inputs)
    their_args, _ = _call_inputs(case_id, their_inputs)
    our_out = _floats_of(ours(*our_args, **call_kwargs))
    their_out = _floats_of(theirs(*their_args, **call_kwargs))
    assert len(our_out) == len(their_out)
    for a, b in zip(our_out, their_out):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)
    upstream = [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in our_out]
    sum(((o * mk.tensor(u)).sum() for o, u in zip(our_out, upstream)), mk.tensor(0.0)).backward()
    sum((o * torch.from_numpy(u)).sum() for o, u in zip(their_out, upstream)).backward()
    for (param_name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=f"gradient of {param_name}")
    for a, b in zip(our_inputs, their_inputs):
        if b.grad is not None:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (buffer_name, buf), ref in zip(ours.named_buffers(), theirs.buffers()):
        np.testing.assert_allclose(buf.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f"buffer {buffer_name}")


@pytest.mark.parametrize("case", [c for c in CASES if c[1] not in ("MultiheadAttention",)],
                         ids=[c[0] for c in CASES if c[1] not in ("MultiheadAttention",)])
def test_parameter_names_and_shapes_match_pytorch(case):
    torch = pytest.importorskip("torch")
    _, name, args, kwargs, _ = case
    ours = _ours(name, args, kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_mha_parameter_names_and_masks_match_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.MultiheadAttention(4, 2, batch_first=True)
    theirs = _torch_layer(torch, "MultiheadAttention", (4, 2), {"batch_first": True}, ours)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    padding = np.array([[False, False, True], [False, False, False]])
    causal = np.triu(np.ones((3, 3), bool), 1)
    for kw in ({"key_padding_mask": padding}, {"attn_mask": causal},
               {"attn_mask": causal, "key_padding_mask": padding,
                "average_attn_weights": False}):
        a = ours(*(mk.tensor(x),) * 3, **{k: mk.tensor(v) if isinstance(v, np.ndarray) else v
                                         for k, v in kw.items()})
        b = theirs(*(torch.from_numpy(x),) * 3,
                   **{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                      for k, v in kw.items()})
        for u, v in zip(a, b):
            np.testing.assert_allclose(u.detach().numpy(), v.detach().numpy(), rtol=1e-4,
                                       atol=1e-5)


def test_transformer_encoder_stacks_independent_copies():
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(4))
    names = list(encoder.state_dict())
    assert "layers.1.self_attn.in_proj_weight" in names and "norm.weight" in names
    assert encoder.layers[0].linear1.weight is not encoder.layers[1].linear1.weight


def test_transformer_encoder_matches_pytorch():
    torch = pytest.importorskip("torch")
    kw = {"dim_feedforward": 6, "dropout": 0.0, "batch_first": True}
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, **kw), num_layers=2)
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(4, 2, **kw), 2,
                                         enable_nested_tensor=False)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.numpy()))
                            for k, v in ours.state_dict().items()})
    x = np.random.default_rng(3).standard_normal((2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(mk.tensor(x)).detach().numpy(),
                               theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_default_init_ranges_follow_pytorch():
    mk.manual_seed(0)
    linear = nn.Linear(100, 50)
    bound = 1 / math.sqrt(100)
    w = linear.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(linear.bias.detach().numpy()).max() <= bound
    conv = nn.Conv2d(4, 8, 3)
    assert np.abs(conv.weight.detach().numpy()).max() <= 1 / math.sqrt(4 * 9)
    gru = nn.GRU(5, 16)
    assert all(np.abs(p.detach().numpy()).max() <= 0.25 for p in gru.parameters())
    emb = nn.Embedding(1000, 8, padding_idx=3)
    assert abs(emb.weight.detach().numpy().std() - 1) < 0.05
    assert not emb.weight.detach().numpy()[3].any()
    bn = nn.BatchNorm2d(3)
    assert bn.weight.tolist() == [1.0] * 3 and bn.bias.tolist() == [0.0] * 3


def test_rnn_initial_state_and_unbatched_input():
    mk.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = mk.randn(2, 5, 3)
    h0, c0 = mk.randn(1, 2, 4), mk.randn(1, 2, 4)
    out, (h, c) = lstm(x, (h0, c0))
    assert out.shape == (2, 5, 4) and h.shape == (1, 2, 4) and c.shape == (1, 2, 4)
    np.testing.assert_allclose(out[:, -1].detach().numpy(), h[0].detach().numpy(), rtol=1e-6)
    single, (h1, _) = lstm(x[0], (h0[:, 0], c0[:, 0]))
    np.testing.assert_allclose(single.detach().numpy(), out[0].detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="input_size"):
        lstm(mk.randn(2, 5, 4))


def test_layer_argument_errors_are_clear():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(ValueError, match="expected 4-d input"):
        nn.BatchNorm2d(3)(mk.zeros(2, 3))
    with pytest.raises(ValueError, match="dropout probability"):
        nn.Dropout(1.5)
