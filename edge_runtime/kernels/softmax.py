"""Softmax, LogSoftmax, Hardmax (opset 13 per-axis semantics and the older flatten-to-2-D
semantics), Dropout, and Attention (scaled dot-product softmax attention, opsets 23-25).

Opsets 1-12 of the softmax family flatten the input to 2-D at `axis` and normalize each row
over all trailing dims together; opset 13 normalizes along the single dim `axis`. Both are
registered as data (`since=1` and `since=13`).

Example:
    >>> import numpy as np
    >>> softmax(np, np.array([[0.0, np.log(3.0)]], np.float32))[0]
    array([[0.25, 0.75]], dtype=float32)
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


def _shifted(xp, x, axis):
    return x - xp.max(x, axis=axis, keepdims=True)


def _flattened(fn):
    """The opset 1-12 form of a softmax-family kernel: fn applied to x flattened at `axis`."""
    def flat_form(xp, x, *, axis=1):
        axis = axis + x.ndim if axis < 0 else axis
        rows = x.reshape(math.prod(x.shape[:axis]), -1)
        return (fn(xp, rows, axis=-1)[0].reshape(x.shape),)
    flat_form.__name__ = f"{fn.__name__}_flattened"
    flat_form.__doc__ = f"Opset 1-12 `{fn.__name__}`: over all dims from `axis` on, flattened."
    return flat_form


@kernel("Softmax", since=13)
def softmax(xp, x, *, axis=-1):
    """ONNX Softmax-13 along `axis`.

    Example:
        >>> import numpy as np
        >>> softmax(np, np.zeros((2, 4), np.float32))[0][0]
        array([0.25, 0.25, 0.25, 0.25], dtype=float32)
    """
    if (xp is np and x.dtype in _GEMV_DTYPES and x.size >= _FAST_MIN_SIZE
            and axis in (-1, x.ndim - 1)):
        fast = _softmax_rows_shifted_by_global_max(x)
        if fast is not None:
            return (fast,)
    e = _shifted(xp, x, axis)
    xp.exp(e, out=e)
    e /= xp.sum(e, axis=axis, keepdims=True)
    return (e,)


# below this many elements numpy's per-call costs outweigh what the fast path saves
_FAST_MIN_SIZE = 1024
_GEMV_DTYPES = frozenset({np.dtype("float32"), np.dtype("float64")})
# exp(-40): a row whose sum falls below this had its maximum over 40 below the global one, and
# its small entries could be subnormal after the global shift
_SMALLEST_ROW_SUM = math.exp(-40)


def _softmax_rows_shifted_by_global_max(x):
    """Softmax over the last dim, shifted by the maximum of all of x instead of each row's, or
    None where a row sum says that loses precision (or is 0 / NaN: -inf rows, NaN input).

    NOTE: numpy's max over short contiguous rows does not vectorize (17 us for (256, 64)
    float32, half the old kernel); the whole-array max, and row sums as a GEMV against ones,
    do: 37 -> 18 us for a transformer's (1, 4, 64, 64) attention.
    """
    e = np.empty(x.shape, x.dtype)       # C order: the rows below must be views of it
    np.subtract(x, np.max(x), out=e)
    np.exp(e, out=e)
    rows = e.reshape(-1, x.shape[-1])
    sums = np.matmul(rows, np.ones(x.shape[-1], x.dtype))
    if not np.min(sums) > _SMALLEST_ROW_SUM:
        return None
    np.divide(rows, sums[:, None], out=rows)
    return e


@kernel("LogSoftmax", since=13)
def log_softmax(xp, x, *, axis=-1):
    """ONNX LogSoftmax-13 along `axis`.

    Example:
        >>> import numpy as np
        >>> log_softmax(np, np.zeros((1, 2), np.float32))[0]
        array([[-0.6931472, -0.6931472]], dtype=float32)
    """
    shifted = _shifted(xp, x, axis)
    shifted -= xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
    return (shifted,)


@kernel("Hardmax", since=13)
def hardmax(xp, x, *, axis=-1):
    """ONNX Hardmax-13: 1 at the first maximum along `axis`, 0 elsewhere.

    Example:
        >>> import numpy as np
        >>> hardmax(np, np.array([[1., 3., 3.]], np.float32))[0]
        array([[0., 1., 0.]], dtype=float32)
    """
    axis = axis + x.ndim if axis < 0 else axis
    first = xp.expand_dims(xp.argmax(x, axis=axis), axis)
    positions = xp.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return ((positions == first).astype(x.dtype),)


softmax_flattened = kernel("Softmax", since=1)(_flattened(softmax))
log_softmax_flattened = kernel("LogSoftmax", since=1)(_flattened(log_softmax))
hardmax_flattened = kernel("Hardmax", since=1)(_flattened(hardmax))


def _dropout(xp, x, ratio, training, seed, n_outputs):
    if not training or ratio == 0:
        mask = xp.ones(x.shape, dtype=bool)
        return (x, mask)[:n_outputs]
    # the onnx reference draws the mask from RandomState(seed); same seed, same mask here
    mask = xp.random.RandomState(seed).uniform(0.0, 1.0, x.shape) >= ratio
    y = x * mask.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - ratio))
    return (y, mask)[:n_outputs]


@kernel("Dropout", since=12, wants_n_outputs=True)
def dropout(xp, x, ratio=None, training_mode=None, *, seed=None, n_outputs=1):
    """ONNX Dropout-12+: identity unless `training_mode` is true; optional boolean mask output.

    Example:
        >>> import numpy as np
        >>> dropout(np, np.ones(3, np.float32), n_outputs=2)[1]
        array([ True,  True,  True])
    """
    ratio = 0.5 if ratio is None else float(ratio)
    training = training_mode is not None and bool(training_mode)
    return _dropout(xp, x, ratio, training, seed, n_outputs)


@kernel("Dropout", since=7, wants_n_outputs=True)
def dropout_7(xp, x, *, ratio=0.5, n_outputs=1):
    """ONNX Dropout-7/10: inference-only in ONNX Runtime's sense, the identity (plus mask).

    Example:
        >>> import numpy as np
        >>> dropout_7(np, np.ones(2, np.float32), ratio=0.3)[0]
        array([1., 1.], dtype=float32)
    """
    return _dropout(xp, x, ratio, False, None, n_outputs)


# ONNX TensorProto element types that Attention's softmax_precision may name
_SOFTMAX_PRECISIONS = {1: "float32", 10: "float16", 11: "float64"}


def _split_heads(x, heads):
    """(B, S, heads*D) -> (B, heads, S, D)."""
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _masked_where(xp, allowed, dtype):
    return xp.where(allowed, dtype.type(0), dtype.type(-xp.inf))


def _position_bias(xp, base, offset, allowed_fn):
    """base + (0 where allowed_fn(i + offset, j) else -inf); a per-batch offset (B,) gives a
    (B, 1, q, kv) result, a scalar one keeps base's shape."""
    q_len, kv_len = base.shape[-2:]
    i = xp.arange(q_len).reshape(q_len, 1)
    j = xp.arange(kv_len).reshape(1, kv_len)
    if getattr(offset, "ndim", 0) > 0:
        allowed = allowed_fn(i + offset.reshape(-1, 1, 1), j)
        return base + _masked_where(xp, allowed, base.dtype)[:, None]
    return base + _masked_where(xp, allowed_fn(i + int(offset), j), base.dtype)


def _attention_bias(xp, dtype, q_len, kv_len, attn_mask, is_causal, offset, windows,
                    nonpad_kv_seqlen):
    """The additive bias (0 or -inf, or a float mask) of ONNX Attention, as the spec orders it:
    mask (padded to kv_len), causal frontier, sliding window, then key padding."""
    bias = xp.zeros((q_len, kv_len), dtype=dtype)
    if attn_mask is not None:
        missing = kv_len - attn_mask.shape[-1]
        if missing > 0:
            fill = False if attn_mask.dtype == bool else -xp.inf
            attn_mask = xp.pad(attn_mask, [(0, 0)] * (attn_mask.ndim - 1) + [(0, missing)],
                               constant_values=fill)
        if attn_mask.dtype == bool:
            attn_mask = _masked_where(xp, attn_mask, dtype)
        bias = bias + attn_mask
    if is_causal:
        bias = _position_bias(xp, bias, offset, lambda p, j: j <= p)
    left, right = windows
    if left >= 0 or right >= 0:
        def inside(p, j):
            ok = xp.ones(xp.broadcast_shapes(p.shape, j.shape), dtype=bool)
            if left >= 0:
                ok &= p - j <= left
            if right >= 0:
                ok &= j - p <= right
            return ok
        bias = _position_bias(xp, bias, offset, inside)
    if nonpad_kv_seqlen is not None:
        keep = xp.arange(kv_len) < nonpad_kv_seqlen.reshape(-1, 1)
        bias = bias + _masked_where(xp, keep, dtype).reshape(-1, 1, 1, kv_len)
    return bias


def _safe_softmax(xp, scores, fully_masked):
    """Softmax over the last axis in which rows that mask every key give zeros, not NaN."""
    top = xp.max(scores, axis=-1, keepdims=True)
    top = xp.where(xp.isneginf(top), top.dtype.type(0), top)
    e = xp.exp(scores - top)
    total = xp.sum(e, axis=-1, keepdims=True)
    e /= xp.where(total == 0, total.dtype.type(1), total)
    return xp.where(fully_masked, e.dtype.type(0), e)


@kernel("Attention", since=23, wants_n_outputs=True)
def attention(xp, q, k, v, attn_mask=None, past_key=None, past_value=None,
              nonpad_kv_seqlen=None, *, is_causal=0, kv_num_heads=None, q_num_heads=None,
              qk_matmul_output_mode=0, scale=None, softcap=0.0, softmax_precision=None,
              left_window_size=-1, right_window_size=-1, n_outputs=1):
    """ONNX Attention (opsets 23-25): softmax(Q K^T * scale + bias) V with grouped-query heads,
    optional KV cache (past_key/past_value), causal and sliding-window masks, key padding,
    softcap; outputs (Y, present_key, present_value, qk_matmul_output) cut to `n_outputs`.

    Example:
        >>> import numpy as np
        >>> q = np.zeros((1, 1, 2, 4), np.float32); v = np.arange(8.0).reshape(1, 1, 2, 4)
        >>> attention(np, q, q, v.astype(np.float32), is_causal=1)[0][0, 0]
        array([[0., 1., 2., 3.],
               [2., 3., 4., 5.]], dtype=float32)
    """
    result_dtype = q.dtype
    if result_dtype.kind == "V":
        # NOTE: extension floats (ml_dtypes' bfloat16) lack matmul loops: compute in float32
        q, k, v, past_key, past_value = (None if t is None else t.astype(xp.float32)
                                         for t in (q, k, v, past_key, past_value))
        if attn_mask is not None and attn_mask.dtype != bool:
            attn_mask = attn_mask.astype(xp.float32)
    three_d = q.ndim == 3
    if three_d:
        if q_num_heads is None or kv_num_heads is None:
            raise KernelError("Attention: 3-D Q/K/V need the q_num_heads and kv_num_heads "
                              "attributes")
        q, k, v = (_split_heads(q, q_num_heads), _split_heads(k, kv_num_heads),
                   _split_heads(v, kv_num_heads))
    dtype = q.dtype
    root_scale = dtype.type(math.sqrt(1 / math.sqrt(q.shape[3]) if scale is None else scale))
    if past_key is not None:
        k = xp.concatenate([past_key, k], axis=2)
        v = xp.concatenate([past_value, v], axis=2)
    present_key, present_value = k, v
    q_len, kv_len = q.shape[2], k.shape[2]
    if past_key is None and nonpad_kv_seqlen is not None:
        offset = nonpad_kv_seqlen.reshape(-1) - q_len
    else:
        offset = past_key.shape[2] if past_key is not None else 0
    bias = _attention_bias(xp, dtype, q_len, kv_len, attn_mask, is_causal, offset,
                           (left_window_size, right_window_size), nonpad_kv_seqlen)
    if q.shape[1] != k.shape[1]:
        # grouped-query attention: each K/V head serves q_heads / kv_heads query heads
        k = xp.repeat(k, q.shape[1] // k.shape[1], axis=1)
        v = xp.repeat(v, q.shape[1] // v.shape[1], axis=1)
    # the scale is split over both factors, as the reference does, to keep the products small
    scores = xp.matmul(q * root_scale, xp.swapaxes(k, -1, -2) * root_scale)
    if softcap and softcap > 0:
        scores = softcap * xp.tanh(scores / dtype.type(softcap))
    qk_output = scores
    with_bias = scores + bias
    if qk_matmul_output_mode == 2:
        qk_output = with_bias
    if softmax_precision is not None:
        with_bias = with_bias.astype(_SOFTMAX_PRECISIONS.get(softmax_precision, dtype))
    fully_masked = xp.isneginf(xp.max(bias, axis=-1, keepdims=True))
    probs = _safe_softmax(xp, with_bias, fully_masked).astype(dtype, copy=False)
    if qk_matmul_output_mode == 3:
        qk_output = probs
    y = xp.matmul(probs, v)
    if three_d:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], q_len, -1)
    outputs = (xp.ascontiguousarray(y), present_key, present_value, qk_output)
    return tuple(o.astype(result_dtype, copy=False) for o in outputs[:max(n_outputs, 1)])
