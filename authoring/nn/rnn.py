"""Recurrent layers `LSTM` and `GRU` with PyTorch's parameters (weight_ih_l{k}, weight_hh_l{k},
bias_ih_l{k}, bias_hh_l{k}, plus `_reverse` for the backward direction) and gate order
(LSTM: input, forget, cell, output; GRU: reset, update, new).

The input projection of a whole sequence is one matmul per layer and direction; only the
hidden-state recurrence steps through time.

Example:
    >>> import modelkit.authoring as mk
    >>> gru = GRU(input_size=8, hidden_size=16, batch_first=True)
    >>> output, h_n = gru(mk.randn(4, 7, 8))
    >>> output.shape, h_n.shape, gru.weight_ih_l0.shape
    (modelkit.Size([4, 7, 16]), modelkit.Size([1, 4, 16]), modelkit.Size([48, 8]))
"""

from __future__ import annotations

import math

from modelkit.authoring.nn import functional as F
from modelkit.authoring.nn import init
from modelkit.authoring.nn.linear import empty_parameter
from modelkit.authoring.nn.module import Module

__all__ = ["LSTM", "GRU"]


class _RNNBase(Module):
    gates = 1      # gate blocks stacked in each weight
    n_states = 1   # h, or h and c

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None):
        super().__init__()
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in [""] + (["_reverse"] if bidirectional else []):
                names = f"l{layer}{suffix}"
                kw = dict(dtype=dtype, device=device)
                setattr(self, f"weight_ih_{names}", empty_parameter(rows, layer_input, **kw))
                setattr(self, f"weight_hh_{names}", empty_parameter(rows, hidden_size, **kw))
                if bias:
                    setattr(self, f"bias_ih_{names}", empty_parameter(rows, **kw))
                    setattr(self, f"bias_hh_{names}", empty_parameter(rows, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def _weights(self, layer: int, reverse: bool):
        names = f"l{layer}{'_reverse' if reverse else ''}"
        biases = (getattr(self, f"bias_ih_{names}"), getattr(self, f"bias_hh_{names}")) \
            if self.bias else (None, None)
        return getattr(self, f"weight_ih_{names}"), getattr(self, f"weight_hh_{names}"), *biases

    def _initial_state(self, hx, batch: int):
        """The given initial state, checked; None stands for zeros (no tensor is built, so a
        traced graph has no batch-sized constant)."""
        shape = (self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size)
        if hx is None:
            return None
        if tuple(hx.shape) != shape:
            raise ValueError(f"{type(self).__name__}: expected hidden state of shape {shape}, "
                             f"got {tuple(hx.shape)}")
        return hx

    def _run(self, input, states):
        """Run all layers over time-major `input` (T, N, F); `states` is a tuple of initial
        state tensors (h, or h and c) each (layers * directions, N, H), or None for zeros.
        Returns the last layer's output and the final states, stacked as the initial ones."""
        import modelkit.authoring as mk
        directions = 2 if self.bidirectional else 1
        finals = [[] for _ in range(self.n_states)]
        x = input
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                initial = None if states is None else tuple(s[index] for s in states)
                out, last = self._direction(x, initial,
                                            self._weights(layer, direction == 1),
                                            reverse=direction == 1)
                outputs.append(out)
                for store, value in zip(finals, last):
                    store.append(value)
            x = outputs[0] if directions == 1 else mk.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        return x, tuple(mk.stack(store, 0) for store in finals)

    def _direction(self, x, state, weights, reverse: bool):
        import modelkit.authoring as mk
        w_ih, w_hh, b_ih, b_hh = weights
        projected = F.linear(x, w_ih, b_ih)  # (T, N, gates * H) for every step at once
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outputs = []
        for t in steps:
            hidden = b_hh if state is None else F.linear(state[0], w_hh, b_hh)
            state = self.cell(projected[t], hidden, state)
            outputs.append(state[0])
        if reverse:
            outputs.reverse()
        return mk.stack(outputs, 0), state

    def _prepare(self, input):
        if input.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected input of 2 (unbatched) or 3 "
                             f"dims, got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input.size(-1) must be equal to "
                             f"input_size. Expected {self.input_size}, got {input.shape[-1]}")
        unbatched = input.ndim == 2
        if unbatched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        return input, unbatched

    def _finish(self, output, unbatched):
        if unbatched:
            return output.squeeze(1)
        return output.transpose(0, 1) if self.batch_first else output

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class GRU(_RNNBase):
    """forward(input, hx=None) -> (output, h_n). input (T, N, F), or (N, T, F) with
    batch_first, or unbatched (T, F); h_n is (num_layers * directions, N, H)."""

    gates = 3

    @staticmethod
    def cell(gi, gh, state):
        """One step; `gh` is W_hh h + b_hh (None when both are zero), `state` None = zeros."""
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        if gh is None:
            r, z, n = i_r.sigmoid(), i_z.sigmoid(), i_n.tanh()
        else:
            h_r, h_z, h_n = gh.chunk(3, dim=-1)
            r, z = (i_r + h_r).sigmoid(), (i_z + h_z).sigmoid()
            n = (i_n + r * h_n).tanh()
        return (n - z * n,) if state is None else (n + z * (state[0] - n),)

    def forward(self, input, hx=None):
        x, unbatched = self._prepare(input)
        if unbatched and hx is not None:
            hx = hx.unsqueeze(1)
        h0 = self._initial_state(hx, x.shape[1])
        output, (h_n,) = self._run(x, None if h0 is None else (h0,))
        return self._finish(output, unbatched), h_n.squeeze(1) if unbatched else h_n


class LSTM(_RNNBase):
    """forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n)); layouts as GRU."""

    gates = 4
    n_states = 2

    @staticmethod
    def cell(gi, gh, state):
        """One step; `gh` is W_hh h + b_hh (None when both are zero), `state` None = zeros."""
        i, f, g, o = (gi if gh is None else gi + gh).chunk(4, dim=-1)
        c = i.sigmoid() * g.tanh()
        if state is not None:
            c = f.sigmoid() * state[1] + c
        return (o.sigmoid() * c.tanh(), c)

    def forward(self, input, hx=None):
        x, unbatched = self._prepare(input)
        if hx is not None:
            hx = tuple(s.unsqueeze(1) for s in hx) if unbatched else tuple(hx)
        states = None if hx is None else (self._initial_state(hx[0], x.shape[1]),
                                          self._initial_state(hx[1], x.shape[1]))
        output, (h_n, c_n) = self._run(x, states)
        if unbatched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return self._finish(output, unbatched), (h_n, c_n)
