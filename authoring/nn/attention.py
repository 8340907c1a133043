"""`MultiheadAttention` with PyTorch's parameters: in_proj_weight (3E, E), in_proj_bias (3E),
out_proj (Linear E -> E), and its masks (attn_mask, key_padding_mask, is_causal).

Example:
    >>> import modelkit.authoring as mk
    >>> attn = MultiheadAttention(8, 2, batch_first=True)
    >>> x = mk.randn(3, 5, 8)
    >>> out, weights = attn(x, x, x)
    >>> out.shape, weights.shape
    (modelkit.Size([3, 5, 8]), modelkit.Size([3, 5, 5]))
"""

from __future__ import annotations

import math

import numpy as np

from modelkit.authoring.nn import functional as F
from modelkit.authoring.nn import init
from modelkit.authoring.nn.linear import Linear, empty_parameter
from modelkit.authoring.nn.module import Module

__all__ = ["MultiheadAttention"]


def _mask_scores(scores, attn_mask, key_padding_mask, is_causal):
    """Add masks to (N, H, L, S) scores: bool True / float -inf means "do not attend"."""
    import modelkit.authoring as mk
    length, source = scores.shape[-2], scores.shape[-1]
    if attn_mask is None and is_causal:
        attn_mask = mk.tensor(np.triu(np.ones((length, source), bool), 1), device=scores.device)
    if attn_mask is not None:
        if attn_mask.ndim == 3:  # (N * H, L, S)
            attn_mask = attn_mask.reshape(-1, scores.shape[1], length, source)
        scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == mk.bool \
            else scores + attn_mask
    if key_padding_mask is not None:
        padding = key_padding_mask.reshape(-1, 1, 1, source)
        scores = scores.masked_fill(padding, float("-inf")) if padding.dtype == mk.bool \
            else scores + padding
    return scores


class MultiheadAttention(Module):
    """Scaled dot-product attention over `num_heads` heads of size embed_dim // num_heads.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False) -> (output, weights or None). Inputs are
    (L, N, E), or (N, L, E) with `batch_first=True`.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads "
                             f"({num_heads})")
        if add_bias_kv or add_zero_attn or kdim not in (None, embed_dim) \
                or vdim not in (None, embed_dim):
            raise ValueError("MultiheadAttention supports kdim == vdim == embed_dim without "
                             "add_bias_kv / add_zero_attn")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.kdim = self.vdim = embed_dim
        self.in_proj_weight = empty_parameter(3 * embed_dim, embed_dim, dtype=dtype, device=device)
        if bias:
            self.in_proj_bias = empty_parameter(3 * embed_dim, dtype=dtype, device=device)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, query, key, value):
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:
            return F.linear(query, weight, bias).chunk(3, dim=-1)
        weights = weight.chunk(3, dim=0)
        biases = bias.chunk(3, dim=0) if bias is not None else (None,) * 3
        return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))

    def _heads(self, x):
        # -1 for the batch dim keeps a traced graph valid for any batch size
        return x.reshape(-1, x.shape[1], self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        if not self.batch_first:
            same_kv, same_qk = key is value, query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)
        length = query.shape[1]
        q, k, v = (self._heads(x) for x in self._project(query, key, value))
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.head_dim))
        scores = _mask_scores(scores, attn_mask, key_padding_mask, is_causal)
        weights = F.softmax(scores, dim=-1)
        if self.dropout > 0:
            weights = F.dropout(weights, self.dropout, self.training)
        out = (weights @ v).permute(0, 2, 1, 3).reshape(-1, length, self.embed_dim)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights

    def extra_repr(self):
        return ""
