"""Assorted kernels: CumProd, BitCast, RotaryEmbedding, Swish, ReverseSequence, Scatter,
MeanVarianceNormalization, EyeLike, Det, SwiGLU, TensorScatter,
LinearAttention, FlexAttention (ai.onnx.preview), and the ai.onnx.preview.training optimisers
Adagrad, Adam and Momentum.

Example:
    >>> import numpy as np
    >>> cum_prod(np, np.float32([1, 2, 3]), np.array(0))[0]
    array([1., 2., 6.], dtype=float32)
"""

from __future__ import annotations

import math

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.elementwise import numpy_dtype
from modelkit.edge_runtime.kernels.indexing import scatter_elements
from modelkit.edge_runtime.kernels.registry import kernel, register


@kernel("CumProd", since=26)
def cum_prod(xp, x, axis, *, exclusive=0, reverse=0):
    """Cumulative product along `axis`; `exclusive` leaves each element out, `reverse` runs
    from the end.

    Example:
        >>> import numpy as np
        >>> cum_prod(np, np.int32([1, 2, 3]), np.array(0), exclusive=1, reverse=1)[0]
        array([6, 3, 1], dtype=int32)
    """
    axis = int(axis.reshape(-1)[0]) % x.ndim
    if reverse:
        x = xp.flip(x, axis=axis)
    if exclusive and x.shape[axis]:  # shift by one along the axis, a 1 coming in first
        head = [slice(None)] * x.ndim
        head[axis] = slice(0, x.shape[axis] - 1)
        ones_shape = list(x.shape)
        ones_shape[axis] = 1
        x = xp.concatenate([xp.ones(ones_shape, dtype=x.dtype), x[tuple(head)]], axis=axis)
    result = xp.cumprod(x, axis=axis, dtype=x.dtype)
    return (xp.flip(result, axis=axis) if reverse else result,)


@kernel("BitCast", since=26)
def bit_cast(xp, input, *, to):
    """The same bytes read as ONNX element type `to` (same bit width, same shape).

    Example:
        >>> import numpy as np
        >>> bit_cast(np, np.float32([1.0]), to=6)[0]
        array([1065353216], dtype=int32)
    """
    dtype = numpy_dtype(to)
    if dtype.itemsize != input.dtype.itemsize:
        raise KernelError(f"BitCast: input type {input.dtype} ({input.dtype.itemsize * 8} bits) "
                          f"and target {dtype} ({dtype.itemsize * 8} bits) differ in width")
    # a view needs contiguous memory (ascontiguousarray would turn a scalar into shape (1,));
    # ONNX fixes little-endian bytes, which numpy and cupy use on every supported target
    contiguous = input if input.flags.c_contiguous else input.copy()
    return (contiguous.view(dtype),)


@kernel("RotaryEmbedding", since=23)
def rotary_embedding(xp, X, cos_cache, sin_cache, position_ids=None, *, interleaved=0,
                     num_heads=0, rotary_embedding_dim=0):
    """Rotate (pairs of) the first `rotary_embedding_dim` features of each head by the angles in
    the caches. X is [B, heads, S, head] or [B, S, heads * head] (then `num_heads` is needed).

    Example:
        >>> import numpy as np
        >>> x = np.float32([[[[1, 0]]]])  # one head of size 2 at position 0
        >>> cos, sin = np.float32([[0]]), np.float32([[1]])  # a quarter turn
        >>> rotary_embedding(np, x, cos, sin, np.array([[0]]))[0]
        array([[[[0., 1.]]]], dtype=float32)
    """
    if X.ndim == 4:  # [B, heads, S, head]: angles broadcast over the heads axis
        heads, head_axis = X, 1
    elif X.ndim == 3 and num_heads:  # [B, S, heads * head]
        heads, head_axis = X.reshape(X.shape[0], X.shape[1], num_heads, -1), 2
    else:
        raise KernelError(f"RotaryEmbedding: X of shape {tuple(X.shape)} needs rank 4, or rank 3 "
                          f"with the num_heads attribute (got {num_heads})")
    rotary = rotary_embedding_dim or heads.shape[-1]
    half = rotary // 2
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    if cos_cache.shape[-1] != half or sin_cache.shape[-1] != half:
        raise KernelError(f"RotaryEmbedding: caches of last dim {cos_cache.shape[-1]} and "
                          f"{sin_cache.shape[-1]}, expected rotary_embedding_dim/2 = {half}")
    cos = xp.expand_dims(cos_cache.astype(X.dtype, copy=False), head_axis)
    sin = xp.expand_dims(sin_cache.astype(X.dtype, copy=False), head_axis)
    pairs = (slice(0, rotary, 2), slice(1, rotary, 2)) if interleaved \
        else (slice(0, half), slice(half, rotary))
    first, second = heads[..., pairs[0]], heads[..., pairs[1]]
    out = xp.empty_like(heads)
    out[..., pairs[0]] = cos * first - sin * second
    out[..., pairs[1]] = sin * first + cos * second
    out[..., rotary:] = heads[..., rotary:]
    return (out.reshape(X.shape),)


@kernel("Swish", since=24)
def swish(xp, X, *, alpha=1.0):
    """x * sigmoid(alpha * x).

    Example:
        >>> import numpy as np
        >>> swish(np, np.float32([0, 1]))[0]
        array([0.       , 0.7310586], dtype=float32)
    """
    scale = X.dtype.type(alpha)
    return (X / (1 + xp.exp(-scale * X)),)


@kernel("ReverseSequence", since=10)
def reverse_sequence(xp, input, sequence_lens, *, batch_axis=1, time_axis=0):
    """Reverse the first sequence_lens[b] steps along `time_axis` of each batch entry b.

    Example:
        >>> import numpy as np
        >>> reverse_sequence(np, np.array([[1, 2, 3], [4, 5, 6]]), np.array([2, 3]),
        ...                  batch_axis=0, time_axis=1)[0]
        array([[2, 1, 3],
               [6, 5, 4]])
    """
    steps, batch = input.shape[time_axis], input.shape[batch_axis]
    lengths = sequence_lens.astype(xp.int64).reshape(1, batch)
    time = xp.arange(steps).reshape(steps, 1)
    source = xp.where(time < lengths, lengths - 1 - time, time)  # [steps, batch]
    shape = [1] * input.ndim
    shape[time_axis], shape[batch_axis] = steps, batch
    if time_axis > batch_axis:
        source = source.T
    index = xp.broadcast_to(source.reshape(shape), input.shape)
    return (xp.take_along_axis(input, index, axis=time_axis),)


register("Scatter", lambda xp, data, indices, updates, *, axis=0:
         scatter_elements(xp, data, indices, updates, axis=axis), since=9)


@kernel("MeanVarianceNormalization", since=9)
def mean_variance_normalization(xp, X, *, axes=(0, 2, 3)):
    """(X - mean) / (std + 1e-9) over `axes` (the epsilon of the ONNX function body, so a
    constant input gives 0, not NaN).

    Example:
        >>> import numpy as np
        >>> mean_variance_normalization(np, np.float32([1, 3]), axes=[0])[0]
        array([-1.,  1.], dtype=float32)
    """
    axes = tuple(axes)
    mean = X.mean(axis=axes, keepdims=True, dtype=X.dtype)
    centred = X - mean
    variance = (centred * centred).mean(axis=axes, keepdims=True, dtype=X.dtype)
    return (centred / (xp.sqrt(variance) + X.dtype.type(1e-9)),)


@kernel("EyeLike", since=9)
def eye_like(xp, input, *, dtype=None, k=0):
    """Ones on diagonal `k` of a matrix shaped like `input`, in ONNX type `dtype` (default:
    the input's type).

    Example:
        >>> import numpy as np
        >>> eye_like(np, np.zeros((2, 3), np.int32), k=1)[0]
        array([[0, 1, 0],
               [0, 0, 1]], dtype=int32)
    """
    if input.ndim != 2:
        raise KernelError(f"EyeLike: input must be 2-D, got shape {tuple(input.shape)}")
    out_dtype = input.dtype if dtype is None else numpy_dtype(dtype)
    return (xp.eye(input.shape[0], input.shape[1], k=k, dtype=out_dtype),)


@kernel("Det", since=11)
def det(xp, X):
    """Determinants of the square matrices in the last two dims of X [*, M, M].

    Example:
        >>> import numpy as np
        >>> det(np, np.float32([[2, 1], [1, 3]]))[0]
        array(5., dtype=float32)
    """
    if X.ndim < 2 or X.shape[-1] != X.shape[-2]:
        raise KernelError(f"Det: X must be [*, M, M], got shape {tuple(X.shape)}")
    return (xp.asarray(xp.linalg.det(X)).astype(X.dtype, copy=False),)


@kernel("SwiGLU", since=28)
def swi_glu(xp, A, B, *, alpha=1.0):
    """Swish(A) * B: the gate A through x * sigmoid(alpha * x), times the value B (same shape).

    Example:
        >>> import numpy as np
        >>> swi_glu(np, np.float32([0, 1]), np.float32([5, 2]))[0]
        array([0.       , 1.4621172], dtype=float32)
    """
    if A.shape != B.shape:
        raise KernelError(f"SwiGLU: A {tuple(A.shape)} and B {tuple(B.shape)} must have the same "
                          "shape (no broadcasting)")
    return (swish(xp, A, alpha=alpha)[0] * B,)


@kernel("TensorScatter", since=24)
def tensor_scatter(xp, past_cache, update, write_indices=None, *, axis=-2, mode="linear"):
    """A copy of the KV cache `past_cache` with `update` written along the sequence `axis`
    from write_indices[b] (0 if absent) in each batch entry b; "circular" wraps around.

    Example:
        >>> import numpy as np
        >>> tensor_scatter(np, np.zeros((1, 4)), np.ones((1, 2)), np.array([1]), axis=1)[0]
        array([[0., 1., 1., 0.]])
    """
    mode = mode.decode() if isinstance(mode, bytes) else mode
    axis %= past_cache.ndim
    if axis == 0:
        raise KernelError("TensorScatter: axis must not be the batch axis 0")
    batch, capacity, length = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    starts = (xp.zeros(batch, dtype=xp.int64) if write_indices is None
              else write_indices.astype(xp.int64).reshape(batch))
    positions = starts[:, None] + xp.arange(length)  # [batch, sequence]
    if mode == "circular":
        positions %= capacity
    elif mode != "linear":
        raise KernelError(f"TensorScatter: mode must be linear or circular, got {mode!r}")
    elif length and int(positions.max()) >= capacity:
        raise KernelError(f"TensorScatter: writes reach index {int(positions.max())} of an axis "
                          f"of {capacity}; use mode='circular' to wrap")
    present = past_cache.copy()
    # with the sequence axis second, one advanced-index assignment writes every batch entry;
    # the moved axes are views, so the write lands in `present`
    xp.moveaxis(present, axis, 1)[xp.arange(batch)[:, None], positions] = \
        xp.moveaxis(update, axis, 1)
    return (present,)


_LINEAR_ATTENTION_RULES = ("linear", "gated", "delta", "gated_delta")


def _heads(x, num_heads):
    """(B, T, H*D) -> (B, H, T, D)."""
    b, t, packed = x.shape
    return x.reshape(b, t, num_heads, packed // num_heads).transpose(0, 2, 1, 3)


@kernel("LinearAttention", since=27)
def linear_attention(xp, query, key, value, past_state=None, decay=None, beta=None, *,
                     q_num_heads, kv_num_heads, chunk_size=64, scale=0.0,
                     update_rule="gated_delta"):
    """Recurrent linear attention over packed [B, T, H*D] inputs: per token, the state
    S (B, H_kv, d_k, d_v) decays by exp(decay) ("gated" rules), takes k (x) v (with the delta
    rule's correction, rate beta) and is read as scale * q^T S; returns the output [B, T, H_q*d_v]
    and the final state. `chunk_size` is a tuning hint without effect on the result.

    Example:
        >>> import numpy as np
        >>> q = k = v = np.ones((1, 2, 1), np.float32)  # two tokens, one head of size 1
        >>> out, state = linear_attention(np, q, k, v, q_num_heads=1, kv_num_heads=1,
        ...                               update_rule="linear")
        >>> out.ravel(), state.ravel()
        (array([1., 2.], dtype=float32), array([2.], dtype=float32))
    """
    rule = update_rule.decode() if isinstance(update_rule, bytes) else update_rule
    if rule not in _LINEAR_ATTENTION_RULES:
        raise KernelError(f"LinearAttention: update_rule must be one of "
                          f"{_LINEAR_ATTENTION_RULES}, got {rule!r}")
    if q_num_heads <= 0 or kv_num_heads <= 0 or q_num_heads % kv_num_heads:
        raise KernelError(f"LinearAttention: q_num_heads ({q_num_heads}) must be a positive "
                          f"multiple of kv_num_heads ({kv_num_heads})")
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gated != (decay is not None) or delta != (beta is not None):
        raise KernelError(f"LinearAttention: update_rule {rule!r} needs "
                          f"{'decay' if gated else 'no decay'} and {'beta' if delta else 'no beta'}"
                          f" inputs")
    work = xp.float64 if query.dtype == xp.float64 else xp.float32
    b, t, _ = query.shape
    group = q_num_heads // kv_num_heads
    d_k, d_v = query.shape[-1] // q_num_heads, value.shape[-1] // kv_num_heads
    # query heads h share the state of KV head h // group
    q = _heads(query, q_num_heads).astype(work).reshape(b, kv_num_heads, group, t, d_k)
    k, v = _heads(key, kv_num_heads).astype(work), _heads(value, kv_num_heads).astype(work)
    if gated:
        if decay.shape[-1] not in (kv_num_heads, kv_num_heads * d_k):
            raise KernelError(f"LinearAttention: decay's last dim is {decay.shape[-1]}, expected "
                              f"kv_num_heads ({kv_num_heads}) or kv_num_heads * d_k "
                              f"({kv_num_heads * d_k})")
        factor = xp.exp(_heads(decay, kv_num_heads).astype(work))  # (B, H_kv, T, 1 or d_k)
    if delta:  # (B, H_kv or 1, T, 1)
        rate = beta.reshape(b, t, beta.shape[-1], 1).transpose(0, 2, 1, 3).astype(work)
    if past_state is not None:
        if past_state.shape != (b, kv_num_heads, d_k, d_v):
            raise KernelError(f"LinearAttention: past_state of shape {tuple(past_state.shape)}, "
                              f"expected {(b, kv_num_heads, d_k, d_v)}")
        state = past_state.astype(work)
    else:
        state = xp.zeros((b, kv_num_heads, d_k, d_v), dtype=work)
    read_scale = work(scale) if scale else work(1 / math.sqrt(d_k))
    out = xp.empty((b, kv_num_heads, group, t, d_v), dtype=work)
    for step in range(t):  # a recurrence: each state depends on the previous one
        if gated:
            state = state * factor[:, :, step, :, None]
        v_t = v[:, :, step]
        if delta:
            v_t = rate[:, :, step] * (v_t - xp.einsum("bhdm,bhd->bhm", state, k[:, :, step]))
        state = state + k[:, :, step, :, None] * v_t[:, :, None, :]
        out[:, :, :, step] = read_scale * xp.einsum("bhgd,bhdm->bhgm", q[:, :, :, step], state)
    output = out.reshape(b, q_num_heads, t, d_v).transpose(0, 2, 1, 3).reshape(b, t, -1)
    state_dtype = past_state.dtype if past_state is not None else query.dtype
    return output.astype(query.dtype), state.astype(state_dtype)


TRAINING = "ai.onnx.preview.training"


def _optimizer_groups(op, inputs, per_tensor):
    """Split (R, T, X1..Xn, G1..Gn, ...) into R, T and n tuples of `per_tensor` arrays."""
    if len(inputs) < 2 + per_tensor or (len(inputs) - 2) % per_tensor:
        raise KernelError(f"{op}: expected R, T and {per_tensor} inputs per optimised tensor, "
                          f"got {len(inputs)} inputs")
    rate, step, *rest = inputs
    n = len(rest) // per_tensor
    return rate, step, [tuple(rest[i + j * n] for j in range(per_tensor)) for i in range(n)]


def _by_kind(updated, n_kinds):
    """[(x1, h1), (x2, h2)] -> (x1, x2, h1, h2): ONNX lists every X first, then every H."""
    return tuple(group[k] for k in range(n_kinds) for group in updated)


@kernel("Adagrad", domain=TRAINING)
def adagrad(xp, *inputs, decay_factor=0.0, epsilon=1e-6, norm_coefficient=0.0):
    """One Adagrad step for each (X, G, H): the learning rate R decays as R / (1 + T *
    decay_factor); returns the new Xs, then the new Hs (accumulated squared gradients).

    Example:
        >>> import numpy as np
        >>> x, h = adagrad(np, np.float32(0.1), np.int64(0), np.float32([1.0]), np.float32([2.0]),
        ...                np.float32([0.0]))
        >>> x.round(4), h  # 1 - 0.1 * 2 / sqrt(4)
        (array([0.9], dtype=float32), array([4.], dtype=float32))
    """
    rate, step, groups = _optimizer_groups("Adagrad", inputs, 3)
    rate = rate / (1 + step * decay_factor)
    updated = []
    for x, g, h in groups:
        g = norm_coefficient * x + g
        h_new = h + g * g
        x_new = x - xp.asarray(rate, dtype=x.dtype) * g / (xp.sqrt(h_new) + epsilon)
        updated.append((x_new.astype(x.dtype), h_new.astype(h.dtype)))
    return _by_kind(updated, 2)


@kernel("Adam", domain=TRAINING)
def adam(xp, *inputs, alpha=0.9, beta=0.999, epsilon=1e-6, norm_coefficient=0.0,
         norm_coefficient_post=0.0):
    """One Adam step for each (X, G, V, H) with bias correction from step count T; returns the
    new Xs, then the Vs (first moments), then the Hs (second moments).

    Example:
        >>> import numpy as np
        >>> x, v, h = adam(np, np.float32(0.1), np.int64(1), np.float32([1.0]), np.float32([1.0]),
        ...                np.float32([0.0]), np.float32([0.0]))
        >>> x.round(4)  # the first step moves by the learning rate
        array([0.9], dtype=float32)
    """
    rate, step, groups = _optimizer_groups("Adam", inputs, 4)
    if int(step) > 0:
        rate = rate * math.sqrt(1 - beta ** int(step)) / (1 - alpha ** int(step))
    updated = []
    for x, g, v, h in groups:
        g = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g
        h_new = beta * h + (1 - beta) * (g * g)
        step_size = xp.asarray(rate, dtype=x.dtype)
        x_new = (1 - norm_coefficient_post) * (x - step_size * (v_new / (xp.sqrt(h_new) + epsilon)))
        updated.append((x_new.astype(x.dtype), v_new.astype(v.dtype), h_new.astype(h.dtype)))
    return _by_kind(updated, 3)


@kernel("Momentum", domain=TRAINING)
def momentum(xp, *inputs, alpha, beta, mode, norm_coefficient):
    """One SGD-with-momentum step ("standard" or "nesterov") for each (X, G, V); the first
    step (T = 0) takes the whole gradient. Returns the new Xs, then the new Vs.

    Example:
        >>> import numpy as np
        >>> momentum(np, np.float32(0.1), np.int64(0), np.float32([1.0]), np.float32([2.0]),
        ...          np.float32([0.0]), alpha=0.9, beta=0.5, mode="standard", norm_coefficient=0.0)
        (array([0.8], dtype=float32), array([2.], dtype=float32))
    """
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("standard", "nesterov"):
        raise KernelError(f"Momentum: mode must be standard or nesterov, got {mode!r}")
    rate, step, groups = _optimizer_groups("Momentum", inputs, 3)
    gradient_scale = beta if int(step) > 0 else 1.0
    updated = []
    for x, g, v in groups:
        g = norm_coefficient * x + g
        v_new = alpha * v + gradient_scale * g
        x_new = x - xp.asarray(rate, dtype=x.dtype) * (v_new if mode == "standard"
                                                       else g + alpha * v_new)
        updated.append((x_new.astype(x.dtype), v_new.astype(v.dtype)))
    return _by_kind(updated, 2)


@kernel("FlexAttention", domain="ai.onnx.preview")
def flex_attention(xp, Q, K, V, *, scale=None, softmax_precision=None):
    """softmax(Q K^T * scale) V over [B, heads, S, D] inputs, query head h reading K/V head
    h // (q_heads / kv_heads); scores and softmax in float32 (float64 for float64 inputs), or in
    ONNX type `softmax_precision`. The score_mod / prob_mod subgraph attributes are not supported
    (the ONNX reader refuses graph attributes).

    Example:
        >>> import numpy as np
        >>> q = k = np.zeros((1, 1, 1, 2), np.float32)
        >>> v = np.float32([[[[1, 2], [3, 4]]]])
        >>> flex_attention(np, q, np.zeros((1, 1, 2, 2), np.float32), v)[0]
        array([[[[2., 3.]]]], dtype=float32)
    """
    if Q.ndim != 4 or K.ndim != 4 or V.ndim != 4 or Q.shape[1] % K.shape[1]:
        raise KernelError(f"FlexAttention: Q {tuple(Q.shape)}, K {tuple(K.shape)} and V "
                          f"{tuple(V.shape)} must be rank 4 with q_heads a multiple of kv_heads")
    if softmax_precision is not None:
        work = numpy_dtype(softmax_precision)
    else:
        work = xp.float64 if Q.dtype == xp.float64 else xp.float32
    b, q_heads, q_len, head_size = Q.shape
    kv_heads = K.shape[1]
    group = q_heads // kv_heads
    factor = scale if scale is not None else 1 / math.sqrt(head_size)
    q = Q.astype(work).reshape(b, kv_heads, group, q_len, head_size)
    scores = (q @ xp.swapaxes(K.astype(work), -1, -2)[:, :, None]) * work(factor)
    scores = xp.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    y = probs @ V.astype(work)[:, :, None]
    return (y.reshape(b, q_heads, q_len, -1).astype(Q.dtype),)
