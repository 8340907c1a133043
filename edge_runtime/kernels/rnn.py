"""LSTM, GRU and RNN (ONNX semantics: directions, sequence_lens, initial states, activations,
clip, layout, peepholes, GRU's linear_before_reset).

The input projection X @ W^T of all time steps is one GEMM before the time loop; each step then
adds the recurrent product H @ R^T and applies the cell. A reverse pass runs forward over each
sequence reversed within its own length, so padded steps never feed the state. Steps past a
sequence's length leave its state unchanged and write zeros to Y, as onnxruntime does.

Example:
    >>> import numpy as np
    >>> x = np.ones((3, 1, 2), np.float32)                      # (seq, batch, input)
    >>> w = np.zeros((1, 4, 2), np.float32); r = np.zeros((1, 4, 4), np.float32)
    >>> y, y_h = rnn(np, x, w, r, hidden_size=4, n_outputs=2)
    >>> y.shape, y_h.shape
    ((3, 1, 1, 4), (1, 1, 4))
"""

from __future__ import annotations

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


def _sigmoid(xp, x, alpha, beta):
    # NOTE: tanh form avoids overflow warnings of exp(-x) for large negative x
    return 0.5 * (xp.tanh(0.5 * x) + 1)


def _softplus(xp, x, alpha, beta):
    return xp.logaddexp(x, 0)


# name -> (function(xp, x, alpha, beta), default alpha, default beta); alpha/beta are
# consumed from activation_alpha/activation_beta only by the functions that take them.
ACTIVATIONS = {
    "Sigmoid": (_sigmoid, None, None),
    "Tanh": (lambda xp, x, a, b: xp.tanh(x), None, None),
    "Relu": (lambda xp, x, a, b: xp.maximum(x, 0), None, None),
    "Affine": (lambda xp, x, a, b: a * x + b, 1.0, 0.0),
    "LeakyRelu": (lambda xp, x, a, b: xp.where(x >= 0, x, a * x), 0.01, None),
    "ThresholdedRelu": (lambda xp, x, a, b: xp.where(x > a, x, 0), 1.0, None),
    "ScaledTanh": (lambda xp, x, a, b: a * xp.tanh(b * x), 1.0, 1.0),
    "HardSigmoid": (lambda xp, x, a, b: xp.clip(a * x + b, 0, 1), 0.2, 0.5),
    "Elu": (lambda xp, x, a, b: xp.where(x >= 0, x, a * (xp.exp(xp.minimum(x, 0)) - 1)),
            1.0, None),
    "Softsign": (lambda xp, x, a, b: x / (1 + xp.abs(x)), None, None),
    "Softplus": (_softplus, None, None),
}

DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def _activation_functions(op, names, alphas, betas, defaults, n_directions):
    """Per direction, the list of activation callables f(xp, x) the cell uses."""
    names = list(names) if names else list(defaults) * n_directions
    if len(names) != len(defaults) * n_directions:
        raise KernelError(f"{op}: activations {names} must list {len(defaults)} functions per "
                          f"direction for {n_directions} direction(s)")
    alphas, betas = list(alphas or ()), list(betas or ())
    functions = []
    for name in names:
        if name not in ACTIVATIONS:
            # ONNX names are case-sensitive, but exporters have written lowercase names
            name = {n.lower(): n for n in ACTIVATIONS}.get(name.lower(), name)
        if name not in ACTIVATIONS:
            raise KernelError(f"{op}: unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
        fn, alpha, beta = ACTIVATIONS[name]
        alpha = alphas.pop(0) if alpha is not None and alphas else alpha
        beta = betas.pop(0) if beta is not None and betas else beta
        functions.append(lambda xp, x, fn=fn, a=alpha, b=beta: fn(xp, x, a, b))
    per = len(defaults)
    return [functions[i * per:(i + 1) * per] for i in range(n_directions)]


def _reverse_within_lengths(xp, x, lengths):
    """x (T, B, ...) with each sequence b's first lengths[b] steps reversed in place."""
    if lengths is None:
        return x[::-1]
    steps = xp.arange(x.shape[0]).reshape(-1, 1)
    lengths = lengths.reshape(1, -1).astype(xp.int64)
    source = xp.where(steps < lengths, lengths - 1 - steps, steps)
    return x[source, xp.arange(x.shape[1]).reshape(1, -1)]


def _run_direction(xp, x, w, wb, lengths, reverse, states, step):
    """Run `step(projected_x_t, states) -> states` over time; returns (Y (T, B, H), states)."""
    seq, batch = x.shape[:2]
    if reverse:
        x = _reverse_within_lengths(xp, x, lengths)
    projected = xp.matmul(x.reshape(seq * batch, -1), w.T).reshape(seq, batch, -1)
    if wb is not None:
        projected += wb
    hidden = states[0].shape[-1]
    y = xp.empty((seq, batch, hidden), dtype=x.dtype)
    active = None
    for t in range(seq):
        new = step(projected[t], states)
        if lengths is not None:
            active = (t < lengths).reshape(-1, 1)
            new = tuple(xp.where(active, n, s) for n, s in zip(new, states))
            y[t] = xp.where(active, new[0], 0)
        else:
            y[t] = new[0]
        states = new
    if reverse:
        y = _reverse_within_lengths(xp, y, lengths)
    return y, states


def _prepare(op, xp, x, w, r, b, sequence_lens, initial, direction, layout, hidden_size,
             n_gates, n_states):
    """Shared input handling: (x as (T, B, I), per-direction biases, lengths, initial states)."""
    if direction not in DIRECTIONS:
        raise KernelError(f"{op}: direction must be one of {sorted(DIRECTIONS)}, "
                          f"got {direction!r}")
    n_directions = len(DIRECTIONS[direction])
    if layout:
        x = x.transpose(1, 0, 2)
        initial = [s.transpose(1, 0, 2) if s is not None else None for s in initial]
    hidden = r.shape[-1]
    if hidden_size is not None and hidden_size != hidden:
        raise KernelError(f"{op}: hidden_size {hidden_size} does not match R of shape {r.shape}")
    expected_w = (n_directions, n_gates * hidden, x.shape[2])
    if tuple(w.shape) != expected_w:
        raise KernelError(f"{op}: W has shape {tuple(w.shape)}, expected {expected_w} for "
                          f"direction {direction!r}, hidden size {hidden}, input of shape "
                          f"{tuple(x.shape)} (seq, batch, input)")
    batch = x.shape[1]
    if b is None:
        b = xp.zeros((n_directions, 2 * n_gates * hidden), dtype=x.dtype)
    lengths = None
    if sequence_lens is not None and bool(xp.any(sequence_lens < x.shape[0])):
        lengths = sequence_lens.astype(xp.int64)
    states = [s if s is not None else xp.zeros((n_directions, batch, hidden), dtype=x.dtype)
              for s in (list(initial) + [None] * n_states)[:n_states]]
    return x, b, lengths, states, n_directions


def _finish(xp, ys, final_states, layout, n_outputs):
    """Stack per-direction results into ONNX outputs (Y, Y_h[, Y_c]) in the requested layout."""
    if len(ys) == 1:
        # xp.stack costs ~5 us a call: one direction only needs a new axis. The final states
        # are copied, as they may be views of Y
        y = ys[0][:, None]                         # (T, 1, B, H)
        finals = [s[None].copy() for s in final_states[0]]
    else:
        y = xp.stack(ys, axis=1)                   # (T, D, B, H)
        finals = [xp.stack(s, axis=0) for s in zip(*final_states)]   # each (D, B, H)
    if layout:
        y = y.transpose(2, 0, 1, 3)
        finals = [f.transpose(1, 0, 2) for f in finals]
    return tuple(xp.ascontiguousarray(o) for o in [y] + finals)[:max(n_outputs, 1)]


def _clipped(xp, clip):
    if clip is None:
        return lambda v: v
    return lambda v: xp.clip(v, -clip, clip)


@kernel("LSTM", since=7, wants_n_outputs=True)
def lstm(xp, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *,
         activation_alpha=None, activation_beta=None, activations=None, clip=None,
         direction="forward", hidden_size=None, input_forget=0, layout=0, n_outputs=3):
    """ONNX LSTM (gates i, o, f, c): (Y, Y_h, Y_c), cut to `n_outputs`.

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 3, 5), np.float32)
        >>> w = np.zeros((2, 16, 5), np.float32); r = np.zeros((2, 16, 4), np.float32)
        >>> [o.shape for o in lstm(np, x, w, r, direction="bidirectional")]
        [(2, 2, 3, 4), (2, 3, 4), (2, 3, 4)]
    """
    x, b, lengths, (h0, c0), n_dir = _prepare(
        "LSTM", xp, x, w, r, b, sequence_lens, [initial_h, initial_c], direction, layout,
        hidden_size, 4, 2)
    hidden = r.shape[-1]
    funcs = _activation_functions("LSTM", activations, activation_alpha, activation_beta,
                                  ("Sigmoid", "Tanh", "Tanh"), n_dir)
    clip_fn = _clipped(xp, clip)
    ys, finals = [], []
    for d, reverse in enumerate(DIRECTIONS[direction]):
        f, g, h = funcs[d]
        r_t = r[d].T
        peep = [None] * 3 if p is None else [p[d, k * hidden:(k + 1) * hidden] for k in range(3)]

        def step(gx, states, r_t=r_t, f=f, g=g, h=h, peep=peep):
            h_prev, c_prev = states
            gates = gx + xp.matmul(h_prev, r_t)
            gi, go, gf, gc = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
            pi, po, pf = peep
            i = f(xp, clip_fn(gi if pi is None else gi + pi * c_prev))
            forget = 1 - i if input_forget else f(xp, clip_fn(gf if pf is None
                                                               else gf + pf * c_prev))
            c = forget * c_prev + i * g(xp, clip_fn(gc))
            o = f(xp, clip_fn(go if po is None else go + po * c))
            return o * h(xp, c), c

        bias = b[d, :4 * hidden] + b[d, 4 * hidden:]
        y, final = _run_direction(xp, x, w[d], bias, lengths, reverse, (h0[d], c0[d]), step)
        ys.append(y)
        finals.append(final)
    return _finish(xp, ys, finals, layout, n_outputs)


def _gru_default_direction(xp, x, w, r, b, h0, reverse, linear_before_reset):
    """One direction of a GRU with the default activations (Sigmoid, Tanh), no clip and no
    sequence lengths: (Y (T, B, H), (final H,)).

    NOTE: a generic step costs ~18 small numpy calls (9 us at batch 1). Here sigmoid(a) =
    0.5 * (tanh(a / 2) + 1) with the halving folded into the input projection and R, the
    recurrent h bias folded into the projection where it is additive (linear_before_reset=0),
    and each new state written straight into Y: 12 calls a step, in place.
    """
    seq, batch = x.shape[:2]
    hidden = r.shape[-1]
    if reverse:
        x = x[::-1]
    w_bias, r_bias = b[:3 * hidden], b[3 * hidden:]
    projected = xp.matmul(x.reshape(seq * batch, -1), w.T).reshape(seq, batch, 3 * hidden)
    projected += w_bias
    projected[..., :2 * hidden] += r_bias[:2 * hidden]
    if not linear_before_reset:
        projected[..., 2 * hidden:] += r_bias[2 * hidden:]
    projected[..., :2 * hidden] *= 0.5
    r_zr_half = xp.ascontiguousarray(r[:2 * hidden].T) * r.dtype.type(0.5)   # (H, 2H)
    r_h_half = xp.ascontiguousarray(r[2 * hidden:].T) * r.dtype.type(0.5)    # (H, H)
    r_bias_h_half = r_bias[2 * hidden:] * r.dtype.type(0.5)
    gx_zr, gx_h = projected[:, :, :2 * hidden], projected[:, :, 2 * hidden:]
    # 0-d arrays: an in-place ufunc with a Python scalar costs twice as much on small arrays
    one, half = xp.ones((), dtype=x.dtype), xp.full((), 0.5, dtype=x.dtype)
    y = xp.empty((seq, batch, hidden), dtype=x.dtype)
    h = h0
    for t in range(seq):
        # .dot: half the call cost of xp.matmul for these small products
        one_plus_tanh_zr = h.dot(r_zr_half)
        if linear_before_reset:
            candidate = h.dot(r_h_half)
        one_plus_tanh_zr += gx_zr[t]
        xp.tanh(one_plus_tanh_zr, out=one_plus_tanh_zr)
        xp.add(one_plus_tanh_zr, one, out=one_plus_tanh_zr)     # 2 * (z, reset)
        if linear_before_reset:
            candidate += r_bias_h_half
            candidate *= one_plus_tanh_zr[:, hidden:]        # reset * (h R_h^T + Rb_h)
        else:
            reset_h = xp.multiply(one_plus_tanh_zr[:, hidden:], h)   # 2 * reset * h
            candidate = reset_h.dot(r_h_half)
        candidate += gx_h[t]
        xp.tanh(candidate, out=candidate)
        # (1 - z) * candidate + z * h = candidate + z * (h - candidate)
        step = h - candidate
        step *= one_plus_tanh_zr[:, :hidden]
        xp.multiply(step, half, out=step)
        xp.add(candidate, step, out=y[t])
        h = y[t]
    if reverse:
        y = y[::-1]
    return y, (h,)


@kernel("GRU", since=7, wants_n_outputs=True)
def gru(xp, x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward",
        hidden_size=None, layout=0, linear_before_reset=0, n_outputs=2):
    """ONNX GRU (gates z, r, h): (Y, Y_h), cut to `n_outputs`.

    Example:
        >>> import numpy as np
        >>> x = np.ones((2, 3, 5), np.float32)
        >>> w = np.zeros((1, 12, 5), np.float32); r = np.zeros((1, 12, 4), np.float32)
        >>> gru(np, x, w, r)[1][0, 0]
        array([0., 0., 0., 0.], dtype=float32)
    """
    x, b, lengths, (h0,), n_dir = _prepare(
        "GRU", xp, x, w, r, b, sequence_lens, [initial_h], direction, layout, hidden_size, 3, 1)
    hidden = r.shape[-1]
    funcs = _activation_functions("GRU", activations, activation_alpha, activation_beta,
                                  ("Sigmoid", "Tanh"), n_dir)
    clip_fn = _clipped(xp, clip)
    default_cell = (clip is None and lengths is None
                    and (activations is None
                         or [a.lower() for a in activations] == ["sigmoid", "tanh"] * n_dir))
    ys, finals = [], []
    for d, reverse in enumerate(DIRECTIONS[direction]):
        if default_cell:
            y, final = _gru_default_direction(xp, x, w[d], r[d], b[d], h0[d], reverse,
                                              linear_before_reset)
            ys.append(y)
            finals.append(final)
            continue
        f, g = funcs[d]
        r_zr, r_h = r[d, :2 * hidden].T, r[d, 2 * hidden:].T
        r_all = r[d].T
        rb_h = b[d, 5 * hidden:]

        def step(gx, states, f=f, g=g, r_zr=r_zr, r_h=r_h, r_all=r_all, rb_h=rb_h):
            (h_prev,) = states
            if linear_before_reset:
                recurrent = xp.matmul(h_prev, r_all)
                zr, rh = recurrent[:, :2 * hidden], recurrent[:, 2 * hidden:] + rb_h
            else:
                zr = xp.matmul(h_prev, r_zr)
            zr = f(xp, clip_fn(gx[:, :2 * hidden] + zr))
            z, reset = zr[:, :hidden], zr[:, hidden:]
            if linear_before_reset:
                candidate = g(xp, clip_fn(gx[:, 2 * hidden:] + reset * rh))
            else:
                candidate = g(xp, clip_fn(gx[:, 2 * hidden:]
                                          + xp.matmul(reset * h_prev, r_h) + rb_h))
            return ((1 - z) * candidate + z * h_prev,)

        # the recurrent biases of z and r fold into the input projection; h's cannot
        bias = b[d, :3 * hidden].copy()
        bias[:2 * hidden] += b[d, 3 * hidden:5 * hidden]
        y, final = _run_direction(xp, x, w[d], bias, lengths, reverse, (h0[d],), step)
        ys.append(y)
        finals.append(final)
    return _finish(xp, ys, finals, layout, n_outputs)


@kernel("RNN", since=7, wants_n_outputs=True)
def rnn(xp, x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
        activation_beta=None, activations=None, clip=None, direction="forward",
        hidden_size=None, layout=0, n_outputs=2):
    """ONNX RNN: H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb); (Y, Y_h), cut to `n_outputs`.

    Example:
        >>> import numpy as np
        >>> x = np.ones((1, 1, 1), np.float32); w = np.ones((1, 1, 1), np.float32)
        >>> rnn(np, x, w, np.zeros((1, 1, 1), np.float32), activations=["Relu"])[1]
        array([[[1.]]], dtype=float32)
    """
    x, b, lengths, (h0,), n_dir = _prepare(
        "RNN", xp, x, w, r, b, sequence_lens, [initial_h], direction, layout, hidden_size, 1, 1)
    hidden = r.shape[-1]
    funcs = _activation_functions("RNN", activations, activation_alpha, activation_beta,
                                  ("Tanh",), n_dir)
    clip_fn = _clipped(xp, clip)
    ys, finals = [], []
    for d, reverse in enumerate(DIRECTIONS[direction]):
        (f,) = funcs[d]
        r_t = r[d].T

        def step(gx, states, f=f, r_t=r_t):
            return (f(xp, clip_fn(gx + xp.matmul(states[0], r_t))),)

        bias = b[d, :hidden] + b[d, hidden:]
        y, final = _run_direction(xp, x, w[d], bias, lengths, reverse, (h0[d],), step)
        ys.append(y)
        finals.append(final)
    return _finish(xp, ys, finals, layout, n_outputs)
