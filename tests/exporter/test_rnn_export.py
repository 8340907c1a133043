"""nn.GRU / nn.LSTM export as one ONNX GRU / LSTM node per layer (not unrolled), matching eager
authoring in onnxruntime and in the edge runtime, at other batch sizes and sequence lengths."""

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import modelkit.authoring as mk
from modelkit import edge_runtime
from modelkit.exporter.export import export

ROOT = Path(__file__).resolve().parents[2]


class WithState(mk.nn.Module):
    """The RNN called with an initial state, flattening LSTM's (h_n, c_n)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h0, c0=None):
        if c0 is None:
            return self.rnn(x, h0)
        output, (h_n, c_n) = self.rnn(x, (h0, c0))
        return output, h_n, c_n


class WithoutState(mk.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        output, state = self.rnn(x)
        return (output, state) if isinstance(state, mk.Tensor) else (output, *state)


def _flat(result):
    result = (result,) if isinstance(result, mk.Tensor) else result
    return [t.detach().numpy() for t in result]


def _inputs(rnn, batch, seq, rng, with_state):
    x_shape = (batch, seq, rnn.input_size) if rnn.batch_first else (seq, batch, rnn.input_size)
    inputs = [rng.standard_normal(x_shape).astype(np.float32)]
    if with_state:
        rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
        states = 2 if isinstance(rnn, mk.nn.LSTM) else 1
        inputs += [rng.standard_normal((rows, batch, rnn.hidden_size)).astype(np.float32)
                   for _ in range(states)]
    return inputs


def _check(model, names, feeds_list, tmp_path):
    sessions = (ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]),
                edge_runtime.load(tmp_path / "m.mkb"))
    for feeds in feeds_list:
        with mk.no_grad():
            expected = _flat(model(*(mk.tensor(a) for a in feeds)))
        feed = dict(zip(names, feeds))
        got_ort = sessions[0].run(None, feed)
        got_edge = list(sessions[1].run(feed).values())
        for want, a, b in zip(expected, got_ort, got_edge):
            np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cls", [mk.nn.GRU, mk.nn.LSTM])
def test_rnn_exports_as_one_node_per_layer(cls, num_layers, bidirectional, batch_first,
                                           with_state, tmp_path):
    mk.manual_seed(0)
    rnn = cls(5, 6, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    model = (WithState if with_state else WithoutState)(rnn).eval()
    rng = np.random.default_rng(0)
    batch_dim, seq_dim = (0, 1) if batch_first else (1, 0)
    names = ["x", "h0", "c0"][:1 + (with_state and (2 if cls is mk.nn.LSTM else 1))]
    axes = {"x": {batch_dim: "batch", seq_dim: "seq"}}
    axes.update({name: {1: "batch"} for name in names[1:]})
    graph = export(model, tuple(_inputs(rnn, 3, 4, rng, with_state)), tmp_path / "m",
                   format="both", input_names=names, dynamic_axes=axes)
    op_types = [n.op_type for n in graph.nodes]
    assert op_types.count(cls.__name__) == num_layers
    assert len(op_types) <= 5 * num_layers + 4  # not unrolled: no per-step nodes
    _check(model, names, [_inputs(rnn, b, t, rng, with_state) for b, t in
                          ((3, 4), (1, 7), (5, 2))], tmp_path)


def test_weights_named_after_state_dict_keys(tmp_path):
    model = WithoutState(mk.nn.LSTM(3, 4, bidirectional=True))
    graph = export(model, mk.ones(2, 1, 3))
    names = {v.name for v in graph.initializers}
    assert {"rnn.weight_ih_l0.onnx_W", "rnn.weight_hh_l0.onnx_R",
            "rnn.bias_ih_l0.onnx_B"} <= names
    w = next(v.data for v in graph.initializers if v.name == "rnn.weight_ih_l0.onnx_W")
    # ONNX's LSTM gates i, o, f, c from PyTorch's i, f, g, o; the reverse direction second
    torch_w = model.rnn.weight_ih_l0_reverse.detach().numpy()
    np.testing.assert_array_equal(w[1], torch_w[[*range(0, 4), *range(12, 16), *range(4, 12)]])


def test_keyword_state_and_unbatched_input(tmp_path):
    class Keyword(mk.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = mk.nn.GRU(3, 4)

        def forward(self, x, h):
            return self.gru(x, hx=h)

    model = Keyword().eval()
    x, h = np.ones((2, 1, 3), np.float32), np.full((1, 1, 4), 0.5, np.float32)
    graph = export(model, (x, h), tmp_path / "m", format="both")
    assert [n.op_type for n in graph.nodes].count("GRU") == 1
    _check(model, ["x", "h"], [[x, h]], tmp_path)
    # an unbatched (T, F) sequence is traced op by op, still correctly
    unbatched = WithoutState(mk.nn.GRU(3, 4)).eval()
    graph = export(unbatched, np.ones((2, 3), np.float32), tmp_path / "m", format="both")
    assert "GRU" not in {n.op_type for n in graph.nodes}
    _check(unbatched, ["x"], [[np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)]], tmp_path)


def test_gru_digits_sample_exports_to_a_gru_node(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "gru_digits_model", ROOT / "samples" / "gru_digits" / "model.py")
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    model = sample.build()
    (x,) = sample.example_inputs()
    graph = export(model, (x,), tmp_path / "m", format="both", input_names=sample.input_names,
                   dynamic_axes=sample.dynamic_axes)
    assert [n.op_type for n in graph.nodes].count("GRU") == 1
    _check(model, ["x"], [[x], [x[:1]], [np.concatenate([x, x, x])]], tmp_path)


def test_initial_state_made_in_forward_follows_the_dynamic_batch(tmp_path):
    class ZerosState(mk.nn.Module):  # the common PyTorch idiom: h0 = zeros(layers, N, H)
        def __init__(self):
            super().__init__()
            self.lstm = mk.nn.LSTM(3, 4, num_layers=2, batch_first=True)

        def forward(self, x):
            h0 = mk.zeros(2, x.size(0), 4)
            output, _ = self.lstm(x, (h0, h0 + 0.25))
            return output

    model = ZerosState().eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    graph = export(model, x, tmp_path / "m", format="both", dynamic_axes={"x": {0: "batch"}})
    assert [n.op_type for n in graph.nodes].count("LSTM") == 2
    _check(model, ["x"], [[x], [rng.standard_normal((4, 5, 3)).astype(np.float32)]], tmp_path)


def test_error_inside_the_module_leaves_later_exports_intact():
    gru = mk.nn.GRU(3, 4)
    with pytest.raises(ValueError, match="expected hidden state of shape"):
        export(gru, (mk.ones(2, 1, 3), mk.ones(2, 1, 4)))
    assert [n.op_type for n in export(gru, mk.ones(2, 1, 3)).nodes].count("GRU") == 1


@pytest.mark.parametrize("opset", [11, 17])  # Squeeze takes axes as an attribute before 13
def test_opsets(opset, tmp_path):
    model = WithoutState(mk.nn.GRU(3, 4, num_layers=2)).eval()
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    graph = export(model, x, tmp_path / "m", format="both", input_names=["x"], opset=opset)
    assert [n.op_type for n in graph.nodes].count("GRU") == 2
    _check(model, ["x"], [[x]], tmp_path)


def test_module_with_its_own_hooks_is_traced_op_by_op(tmp_path):
    gru = mk.nn.GRU(3, 4)
    gru.register_forward_hook(lambda module, args, output: (output[0] * 2, output[1]))
    model = WithoutState(gru).eval()
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 1, 3)
    graph = export(model, x, tmp_path / "m", format="both", input_names=["x"])
    assert "GRU" not in {n.op_type for n in graph.nodes}
    _check(model, ["x"], [[x]], tmp_path)
