"""Module lowerings: layers that export as a few whole ONNX nodes instead of their primitive ops.

`nn.GRU` and `nn.LSTM` run in eager code as a Python loop over time steps; traced op by op they
unroll into hundreds of small nodes. As PyTorch's exporter does, the tracer records such a module
call as one call (its forward runs eagerly meanwhile, recording nothing) and lowers it here: one
ONNX `GRU` / `LSTM` node per layer, with the weights rearranged into ONNX's gate order and layout.

A lowering is looked up by the module's exact class (`LOWERINGS`): a user subclass may override
`forward`, so it is traced op by op.

Weights: ONNX wants each layer's weights concatenated (W, R, B: [directions, gates * hidden, ...]
in ONNX's gate order), new tensors that PyTorch names `onnx::GRU_123`; here they are named after
the layer's first state_dict key and what they are, e.g. `gru.weight_ih_l0.onnx_W`.

Example:
    >>> import modelkit.authoring as mk
    >>> from modelkit.exporter.export import export
    >>> graph = export(mk.nn.GRU(4, 8, batch_first=True), mk.ones(2, 5, 4))
    >>> [n.op_type for n in graph.nodes if n.op_type == "GRU"], graph.initializers[0].name
    (['GRU'], 'weight_ih_l0.onnx_W')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from modelkit.authoring.nn.rnn import GRU, LSTM


@dataclass(frozen=True)
class ModuleLowering:
    """How one module class exports. The tracer treats a call as an op named `name`:
    `inputs(module, args, kwargs)` gives the call's tensor inputs (None for an omitted optional
    one), or None when this call cannot be lowered whole (it is then traced op by op);
    `lower(g, *input_values, module=module)` emits the nodes with the tracer's `Emitter` `g` and
    returns one value per tensor of the module's output, flattened in order."""

    name: str
    inputs: Callable
    lower: Callable
    onnx: tuple = ()  # no single-node ONNX spec: the tracer calls `lower`
    n_outputs: int = 0


# ONNX gate blocks as indices of PyTorch's: GRU r,z,n -> z,r,h; LSTM i,f,g,o -> i,o,f,c.
_GATE_ORDER = {"GRU": (1, 0, 2), "LSTM": (0, 3, 1, 2)}


def _gru_inputs(module, args, kwargs) -> Optional[tuple]:
    bound = _bind(module, args, kwargs)
    if bound is None:
        return None
    return bound["input"], bound.get("hx")


def _lstm_inputs(module, args, kwargs) -> Optional[tuple]:
    bound = _bind(module, args, kwargs)
    if bound is None:
        return None
    hx = bound.get("hx")
    if hx is None:
        return bound["input"], None, None
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        return None  # let eager forward report the malformed state
    return bound["input"], hx[0], hx[1]


def _bind(module, args, kwargs) -> Optional[dict]:
    """{"input": ..., "hx": ...} of a call the ONNX node computes as eager forward does; None
    for the others, traced op by op: unbatched (T, F) sequences, dropout between layers in
    training mode, and calls that forward itself rejects (it then reports the error)."""
    names = ("input", "hx")
    if len(args) > len(names) or set(kwargs) - set(names):
        return None
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in bound:
            return None
        bound[key] = value
    x = bound.get("input")
    if getattr(x, "ndim", None) != 3 or (module.training and module.dropout
                                         and module.num_layers > 1):
        return None
    return bound


def _lower_rnn(g, x, h0=None, c0=None, *, module):
    """One ONNX GRU / LSTM node per layer; PyTorch's (output, h_n[, c_n])."""
    op_type = type(module).__name__
    directions = 2 if module.bidirectional else 1
    hidden = module.hidden_size
    states = (h0,) if op_type == "GRU" else (h0, c0)
    extra = {"linear_before_reset": 1} if op_type == "GRU" else {}
    if module.batch_first:  # ONNX's sequence layout is [seq, batch, feature]
        x = g.op("Transpose", x, perm=[1, 0, 2])
    finals = [[] for _ in states]
    for layer in range(module.num_layers):
        w, r, b = _layer_weights(g, module, layer, op_type)
        initial = [None if s is None else _layer_states(g, s, layer, directions, module)
                   for s in states]
        y, *last = g.op(op_type, x, w, r, b, None, *initial, outputs=1 + len(states),
                        hidden_size=hidden,
                        direction="bidirectional" if directions == 2 else "forward", **extra)
        x = _sequence_output(g, y, directions, hidden)  # [seq, batch, directions * hidden]
        for store, value in zip(finals, last):
            store.append(value)
    if module.batch_first:
        x = g.op("Transpose", x, perm=[1, 0, 2])
    return (x, *(store[0] if len(store) == 1 else g.op("Concat", *store, axis=0)
                 for store in finals))


def _layer_weights(g, module, layer: int, op_type: str):
    """W [dirs, G*H, in], R [dirs, G*H, H], B [dirs, 2*G*H] (None without bias) of one layer."""
    order, hidden = _GATE_ORDER[op_type], module.hidden_size
    suffixes = ("", "_reverse") if module.bidirectional else ("",)

    def gates(array):
        array = np.asarray(array)
        return np.concatenate([array[k * hidden:(k + 1) * hidden] for k in order], 0)

    def param(kind, suffix):
        return getattr(module, f"{kind}_l{layer}{suffix}")

    tensors = {"W": ("weight_ih", lambda s: gates(param("weight_ih", s).array)),
               "R": ("weight_hh", lambda s: gates(param("weight_hh", s).array))}
    if module.bias:
        tensors["B"] = ("bias_ih", lambda s: np.concatenate(
            [gates(param("bias_ih", s).array), gates(param("bias_hh", s).array)]))
    values = []
    for what, (kind, build) in tensors.items():
        first = param(kind, "")
        key = g.tracer.param_names.get(id(first.array)) or \
            ".".join(filter(None, (g.module, f"{kind}_l{layer}")))
        array = np.stack([build(s) for s in suffixes])
        graph = g.tracer.graph
        values.append(graph.add_initializer(graph.unique_value_name(f"{key}.onnx_{what}"), array))
    return (*values, None) if len(values) == 2 else tuple(values)


def _layer_states(g, state, layer: int, directions: int, module):
    """Rows of one layer of a PyTorch state [layers * dirs, batch, H]: ONNX's [dirs, batch, H]."""
    if module.num_layers == 1:
        return state
    return g.op("Slice", state, g.const(np.array([layer * directions], np.int64)),
                g.const(np.array([(layer + 1) * directions], np.int64)),
                g.const(np.array([0], np.int64)))


def _sequence_output(g, y, directions: int, hidden: int):
    """ONNX Y [seq, dirs, batch, H] as PyTorch's output [seq, batch, dirs * H]."""
    if directions == 1:
        if g.opset >= 13:
            return g.op("Squeeze", y, g.const(np.array([1], np.int64)))
        return g.op("Squeeze", y, axes=[1])
    y = g.op("Transpose", y, perm=[0, 2, 1, 3])
    return g.op("Reshape", y, g.const(np.array([0, 0, directions * hidden], np.int64)))


LOWERINGS: dict[type, ModuleLowering] = {
    GRU: ModuleLowering("nn.GRU", _gru_inputs, _lower_rnn, n_outputs=2),
    LSTM: ModuleLowering("nn.LSTM", _lstm_inputs, _lower_rnn, n_outputs=3),
}
