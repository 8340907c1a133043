"""Kernels of the ai.onnx.ml domain that scikit-learn models converted by skl2onnx use:
LinearClassifier, LinearRegressor, Normalizer, ArrayFeatureExtractor, LabelEncoder, Binarizer.

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

from modelkit.edge_runtime.errors import KernelError
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


@kernel("LabelEncoder", domain=ML, since=2)
def label_encoder(xp, X, *, default_float=-0.0, default_int64=-1, default_string="_Unused",
                  default_tensor=None, keys_floats=None, keys_int64s=None, keys_strings=None,
                  keys_tensor=None, values_floats=None, values_int64s=None, values_strings=None,
                  values_tensor=None):
    """Map each element of X from its key to the value at the same position; unknown elements
    get the default of the values' type.

    Example:
        >>> import numpy as np
        >>> label_encoder(np, np.array(["b", "z"], dtype=object), keys_strings=["a", "b"],
        ...               values_int64s=[1, 2])[0]
        array([ 2, -1])
    """
    return _encode(xp, X, _label_table(
        default_float=default_float, default_int64=default_int64, default_string=default_string,
        default_tensor=default_tensor, keys_floats=keys_floats, keys_int64s=keys_int64s,
        keys_strings=keys_strings, keys_tensor=keys_tensor, values_floats=values_floats,
        values_int64s=values_int64s, values_strings=values_strings, values_tensor=values_tensor))


def prepare_label_encoder(xp, attrs: dict, constants: list):
    """LabelEncoder with its sorted key/value table built once, at load (a plan's
    `PREPARED_KERNELS` entry; `constants` is unused: the table comes from attributes only).

    Example:
        >>> import numpy as np
        >>> encode = prepare_label_encoder(np, {"keys_int64s": [3, 1], "values_strings": ["c", "a"]}, [None])
        >>> encode(np.array([1, 2, 3]))[0]
        array(['a', '_Unused', 'c'], dtype=object)
    """
    table = _label_table(**attrs)
    return lambda X: _encode(xp, X, table)


def _label_table(*, default_float=-0.0, default_int64=-1, default_string="_Unused",
                 default_tensor=None, keys_floats=None, keys_int64s=None, keys_strings=None,
                 keys_tensor=None, values_floats=None, values_int64s=None, values_strings=None,
                 values_tensor=None):
    """(keys sorted for searchsorted, values in the same order, default value)."""
    key_lists = [k for k in (keys_floats, keys_int64s, keys_strings, keys_tensor) if k is not None]
    value_lists = [(v, kind) for v, kind in ((values_floats, "float32"), (values_int64s, "int64"),
                                             (values_strings, "object"), (values_tensor, None))
                   if v is not None]
    if len(key_lists) != 1 or len(value_lists) != 1:
        raise KernelError("LabelEncoder: exactly one keys_* and one values_* attribute are needed, "
                         f"got {len(key_lists)} and {len(value_lists)}")
    raw_values, kind = value_lists[0]
    values = np.asarray(raw_values) if kind is None else np.asarray(raw_values, dtype=kind)
    if values.dtype.kind in "OSU":
        values = np.array([_text(v) for v in values.reshape(-1)], dtype=object)
    keys = np.asarray(key_lists[0])
    if keys.dtype.kind in "OSU":
        keys = np.array([_text(k) for k in keys.reshape(-1)], dtype=np.str_)
    if keys.size != values.size or keys.size == 0:
        raise KernelError(f"LabelEncoder: {keys.size} keys and {values.size} values; expected "
                          "the same number, at least one")
    if default_tensor is not None:
        default = np.asarray(default_tensor).reshape(-1)[0]
    else:
        default = {"f": default_float, "i": default_int64}.get(values.dtype.kind, default_string)
    order = np.argsort(keys.reshape(-1), kind="stable")  # sorted, for searchsorted lookups
    keys, values = keys.reshape(-1)[order], values.reshape(-1)[order]
    return keys, values, default


def _encode(xp, X, table):
    keys, values, default = table
    host = X if xp is np or X.dtype == object else xp.asnumpy(X)
    if keys.dtype.kind == "U":
        host = host.astype(np.str_)
    position = np.minimum(np.searchsorted(keys, host), len(keys) - 1)
    found = keys[position] == host
    if keys.dtype.kind == "f":  # NaN is a key like any other
        found |= np.isnan(keys[position]) & np.isnan(host)
    out_dtype = values.dtype
    result = np.where(found, values[position], np.asarray(_text(default), dtype=out_dtype))
    result = result.astype(out_dtype, copy=False)
    return (result if xp is np or out_dtype == object else xp.asarray(result),)


@kernel("Binarizer", domain=ML)
def binarizer(xp, X, *, threshold=0.0):
    """1 where X > threshold, else 0, in X's type.

    Example:
        >>> import numpy as np
        >>> binarizer(np, np.float32([0.5, 2]), threshold=1.0)[0]
        array([0., 1.], dtype=float32)
    """
    return ((X > X.dtype.type(threshold)).astype(X.dtype),)


# TreeEnsemble's integer codes
_TREE_POST_TRANSFORMS = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO"}
_TREE_MEMBER_MODE = 6  # modes 0..5: <=, <, >=, >, ==, != against the split value


def _tree_members(modes, membership_values):
    """[nodes, most members] values of each set-membership node (NaN-padded); the attribute lists
    them node by node, in node order, each set ended by a NaN."""
    member_nodes = np.flatnonzero(modes == _TREE_MEMBER_MODE)
    values = np.asarray(membership_values if membership_values is not None else [], np.float64)
    ends = np.flatnonzero(np.isnan(values))
    if len(ends) != len(member_nodes):
        raise KernelError(f"TreeEnsemble: {len(member_nodes)} set-membership nodes but "
                          f"{len(ends)} NaN-delimited sets in membership_values")
    sets = np.split(values, ends + 1)[:len(ends)]
    members = np.full((len(modes), max([len(s) - 1 for s in sets], default=0)), np.nan)
    for node, members_of_node in zip(member_nodes, sets):  # one row per node, not per element
        members[node, :len(members_of_node) - 1] = members_of_node[:-1]
    return members


@kernel("TreeEnsemble", domain=ML, since=5)
def tree_ensemble(xp, X, *, nodes_splits, nodes_featureids, nodes_modes, nodes_truenodeids,
                  nodes_falsenodeids, nodes_trueleafs, nodes_falseleafs, leaf_targetids,
                  leaf_weights, tree_roots, n_targets, aggregate_function=1, post_transform=0,
                  nodes_hitrates=None, nodes_missing_value_tracks_true=None,
                  membership_values=None):
    """Every row of X [N, F] walks every tree (all rows and trees at once, one tree level per
    step) to a leaf, whose weight goes to its target: summed, averaged, or min/max-ed (
    aggregate_function 1, 0, 2, 3) into [N, n_targets]. `nodes_hitrates` only guides builders.

    Example:
        >>> import numpy as np
        >>> tree_ensemble(np, np.float32([[1], [5]]), nodes_splits=[2.0], nodes_featureids=[0],
        ...               nodes_modes=[0], nodes_truenodeids=[0], nodes_falsenodeids=[1],
        ...               nodes_trueleafs=[1], nodes_falseleafs=[1], leaf_targetids=[0, 0],
        ...               leaf_weights=[-1.0, 1.0], tree_roots=[0], n_targets=1)[0]
        array([[-1.],
               [ 1.]], dtype=float32)
    """
    if aggregate_function not in (0, 1, 2, 3):
        raise KernelError(f"TreeEnsemble: aggregate_function must be 0 (average), 1 (sum), "
                          f"2 (min) or 3 (max), got {aggregate_function}")
    if post_transform not in _TREE_POST_TRANSFORMS:
        raise KernelError(f"TreeEnsemble: post_transform {post_transform} is not supported; "
                          f"expected one of {sorted(_TREE_POST_TRANSFORMS)} (PROBIT is not)")
    host = X if xp is np else xp.asnumpy(X)
    values = _rows(np, host).astype(np.float64)
    splits = np.asarray(nodes_splits, np.float64)
    features, modes = np.asarray(nodes_featureids, np.int64), np.asarray(nodes_modes, np.int64)
    true_ids, false_ids = np.asarray(nodes_truenodeids), np.asarray(nodes_falsenodeids)
    true_leaf, false_leaf = np.asarray(nodes_trueleafs, bool), np.asarray(nodes_falseleafs, bool)
    nan_goes_true = (np.zeros(len(modes), bool) if nodes_missing_value_tracks_true is None
                     else np.asarray(nodes_missing_value_tracks_true, bool))
    members = _tree_members(modes, membership_values)
    roots = np.asarray(tree_roots, np.int64)
    # a root whose both branches are the same leaf is that leaf, at the root's own index
    root_is_leaf = true_leaf[roots] & false_leaf[roots] & (true_ids[roots] == false_ids[roots])
    node = np.broadcast_to(roots, (len(values), len(roots))).copy()
    at_leaf = np.broadcast_to(root_is_leaf, node.shape).copy()
    for _ in range(len(modes) + 1):  # one tree level per step; no path is longer than the nodes
        walking = np.nonzero(~at_leaf)
        if len(walking[0]) == 0:
            break
        current = node[walking]
        x = values[walking[0], features[current]]
        split, mode = splits[current], modes[current]
        in_set = (members[current] == x[:, None]).any(axis=1) if members.shape[1] else False
        passed = np.select([mode == 0, mode == 1, mode == 2, mode == 3, mode == 4, mode == 5],
                           [x <= split, x < split, x >= split, x > split, x == split,
                            x != split], in_set)
        go_true = passed | (nan_goes_true[current] & np.isnan(x))
        node[walking] = np.where(go_true, true_ids[current], false_ids[current])
        at_leaf[walking] = np.where(go_true, true_leaf[current], false_leaf[current])
    weights = np.asarray(leaf_weights, np.float64)[node]
    targets = np.asarray(leaf_targetids, np.int64)[node]
    rows = np.broadcast_to(np.arange(len(values))[:, None], node.shape)
    out_dtype = host.dtype if host.dtype.kind == "f" else np.dtype(np.float32)
    if aggregate_function in (0, 1):
        scores = np.zeros((len(values), n_targets))
        np.add.at(scores, (rows, targets), weights)
        if aggregate_function == 0:
            scores /= len(roots)
    else:
        limits = np.finfo(out_dtype)
        scores = np.full((len(values), n_targets),
                         float(limits.max if aggregate_function == 2 else limits.min))
        (np.minimum if aggregate_function == 2 else np.maximum).at(scores, (rows, targets), weights)
    scores = _post_transform(np, scores, _TREE_POST_TRANSFORMS[post_transform])
    return (xp.asarray(scores.astype(out_dtype)),)
