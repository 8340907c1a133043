"""Kernels of the ai.onnx.ml domain that scikit-learn models converted by skl2onnx use:
LinearClassifier, LinearRegressor, Normalizer, ArrayFeatureExtractor.

Semantics follow onnxruntime (and onnx's reference evaluator, `onnx/reference/ops/aionnxml`).
ZipMap has no kernel: its output is a sequence of maps, not a tensor; convert scikit-learn models
with `options={id(model): {"zipmap": False}}`.

Example:
    >>> import numpy as np
    >>> normalizer(np, np.array([[3.0, 4.0]], np.float32), norm="L2")[0]
    array([[0.6, 0.8]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from modelkit.edge_runtime.kernels.registry import kernel

ML = "ai.onnx.ml"


def _rows(xp, x):
    """x as float rows [N, C] (float64 stays float64; everything else computes in float32)."""
    x = x if x.dtype == xp.float64 else x.astype(xp.float32)
    return x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)


def _post_transform(xp, scores, post_transform: str):
    if post_transform == "NONE":
        return scores
    if post_transform == "LOGISTIC":
        return 1 / (1 + xp.exp(-scores))
    if post_transform == "SOFTMAX":
        e = xp.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if post_transform == "SOFTMAX_ZERO":  # softmax over the non-zero scores; zeros stay zero
        nonzero = scores != 0
        e = xp.where(nonzero, xp.exp(scores - scores.max(axis=1, keepdims=True)), 0)
        return e / xp.maximum(e.sum(axis=1, keepdims=True), xp.finfo(scores.dtype).tiny)
    raise ValueError(f"post_transform {post_transform!r} is not supported; expected NONE, "
                     "LOGISTIC, SOFTMAX or SOFTMAX_ZERO")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


@kernel("LinearClassifier", domain=ML)
def linear_classifier(xp, x, *, coefficients, intercepts=None, classlabels_ints=None,
                      classlabels_strings=None, multi_class=0, post_transform="NONE"):
    """Scores `x @ coefficients.T + intercepts` (post-transformed) and the top-scoring label.

    Example:
        >>> import numpy as np
        >>> labels, scores = linear_classifier(np, np.float32([[1, 2]]), coefficients=[1, 0, 0, 1],
        ...                                    classlabels_ints=[7, 9])
        >>> labels, scores
        (array([9]), array([[1., 2.]], dtype=float32))
    """
    x = _rows(xp, x)
    weights = xp.asarray(coefficients, dtype=x.dtype).reshape(-1, x.shape[1])
    scores = x @ weights.T
    if intercepts is not None:
        scores = scores + xp.asarray(intercepts, dtype=x.dtype)
    labels = classlabels_ints if classlabels_ints is not None else classlabels_strings
    if labels is not None and len(labels) == 2 and scores.shape[1] == 1:
        scores = xp.concatenate([-scores, scores], axis=1)  # one score for two classes
    scores = _post_transform(xp, scores, _text(post_transform)).astype(x.dtype, copy=False)
    best = xp.argmax(scores, axis=1)
    if classlabels_ints is not None:
        return xp.asarray(classlabels_ints, dtype=xp.int64)[best], scores
    if classlabels_strings is not None:  # string tensors live on the host, as numpy objects
        names = np.array([_text(s) for s in classlabels_strings], dtype=object)
        return names[xp.asnumpy(best) if xp is not np else best], scores
    return best.astype(xp.int64), scores


@kernel("LinearRegressor", domain=ML)
def linear_regressor(xp, x, *, coefficients=None, intercepts=None, targets=1,
                     post_transform="NONE"):
    """`x @ coefficients.reshape(targets, C).T + intercepts`, shape [N, targets].

    Example:
        >>> import numpy as np
        >>> linear_regressor(np, np.float32([[1, 2]]), coefficients=[1, 1], intercepts=[0.5])[0]
        array([[3.5]], dtype=float32)
    """
    if _text(post_transform) != "NONE":
        raise ValueError(f"post_transform {post_transform!r} is not supported; expected NONE")
    x = _rows(xp, x)
    weights = xp.asarray(coefficients, dtype=x.dtype).reshape(targets, -1)
    y = x @ weights.T
    if intercepts is not None:
        y = y + xp.asarray(intercepts, dtype=x.dtype)
    return (y,)


@kernel("Normalizer", domain=ML)
def normalizer(xp, x, *, norm="MAX"):
    """Each row divided by its max-abs ("MAX"), L1 or L2 norm.

    Example: see the module docstring.
    """
    x = _rows(xp, x)
    norm = _text(norm)
    if norm == "MAX":
        size = xp.abs(x).max(axis=1, keepdims=True)
    elif norm == "L1":
        size = xp.abs(x).sum(axis=1, keepdims=True)
    elif norm == "L2":
        size = xp.sqrt((x * x).sum(axis=1, keepdims=True))
    else:
        raise ValueError(f"norm {norm!r} is not supported; expected MAX, L1 or L2")
    return (x / xp.maximum(size, x.dtype.type(1e-30)),)


@kernel("ArrayFeatureExtractor", domain=ML)
def array_feature_extractor(xp, x, indices):
    """The entries of the last axis of `x` at `indices` (flattened); a 1-D `x` gives one row.

    Example:
        >>> import numpy as np
        >>> array_feature_extractor(np, np.array([[1, 2, 3]]), np.array([2, 0]))[0]
        array([[3, 1]])
    """
    index = indices.reshape(-1)
    if index.size and (int(index.max()) >= x.shape[-1] or int(index.min()) < -x.shape[-1]):
        raise IndexError(f"indices {index.tolist()} out of range for the last dim of size "
                         f"{x.shape[-1]}")
    shape = (1, index.size) if x.ndim == 1 else (*x.shape[:-1], index.size)
    return (xp.take(x, index, axis=-1).reshape(shape),)
