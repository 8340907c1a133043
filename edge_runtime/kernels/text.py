"""Text kernels: StringConcat, StringSplit, StringNormalizer, RegexFullMatch, TfIdfVectorizer.

String tensors live on the host as numpy object arrays of `str` (as everywhere in the runtime);
the string kernels work on them with numpy's vectorised `np.strings` functions where one
exists. TfIdfVectorizer also counts integer n-grams, on any array module.

Example:
    >>> import numpy as np
    >>> string_concat(np, np.array(["a", "b"], dtype=object), np.array(["!"], dtype=object))[0]
    array(['a!', 'b!'], dtype=object)
"""

from __future__ import annotations

import re

import numpy as np

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _strings(x) -> np.ndarray:
    """A string tensor as a fixed-width unicode array, for np.strings."""
    return np.asarray(x).astype(np.str_)


@kernel("StringConcat", since=20)
def string_concat(xp, X, Y):
    """Element-wise X + Y of two (broadcast) string tensors.

    Example: see the module docstring.
    """
    return (np.strings.add(_strings(X), _strings(Y)).astype(object),)


@kernel("RegexFullMatch", since=20)
def regex_full_match(xp, X, *, pattern):
    """True where the whole string matches `pattern` (Python `re`, which accepts the RE2 syntax
    the spec names for the patterns ONNX models use).

    Example:
        >>> import numpy as np
        >>> regex_full_match(np, np.array(["ab1", "ab"], dtype=object), pattern="[a-z]+\\\\d")[0]
        array([ True, False])
    """
    try:
        regex = re.compile(_text(pattern))
    except re.error as e:
        raise KernelError(f"RegexFullMatch: invalid pattern {pattern!r}: {e}") from e
    flat = np.asarray(X).reshape(-1)
    matched = np.fromiter((regex.fullmatch(s) is not None for s in flat), dtype=bool,
                          count=flat.size)
    return (matched.reshape(np.shape(X)),)


@kernel("StringSplit", since=20)
def string_split(xp, X, *, delimiter=None, maxsplit=None):
    """Split each string on `delimiter` (runs of whitespace when unset or ""), at most
    `maxsplit` times: the parts padded with "" to [*X.shape, most parts], and the part counts.

    Example:
        >>> import numpy as np
        >>> parts, counts = string_split(np, np.array(["a,b", "c"], dtype=object), delimiter=",")
        >>> parts, counts
        (array([['a', 'b'],
               ['c', '']], dtype=object), array([2, 1]))
    """
    separator = _text(delimiter) or None
    limit = -1 if maxsplit is None else maxsplit
    flat = np.asarray(X).reshape(-1)
    pieces = [str(s).split(separator, limit) for s in flat]
    counts = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    width = int(counts.max(initial=0))
    parts = np.full((len(pieces), width), "", dtype=object)
    if width:
        rows = np.repeat(np.arange(len(pieces)), counts)
        columns = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        parts[rows, columns] = [part for p in pieces for part in p]
    shape = np.shape(X)
    return parts.reshape(*shape, width), counts.reshape(shape)


@kernel("StringNormalizer", since=10)
def string_normalizer(xp, X, *, case_change_action="NONE", is_case_sensitive=0, locale=None,
                      stopwords=None):
    """Drop the elements of a [C] or [1, C] string tensor that are `stopwords` (compared
    case-insensitively unless `is_case_sensitive`), then LOWER/UPPER-case the rest; when every
    element goes, the result is one empty string. `locale` is ignored: casing is Unicode's.

    Example:
        >>> import numpy as np
        >>> string_normalizer(np, np.array(["The", "Cat"], dtype=object),
        ...                   case_change_action="UPPER", stopwords=["the"])[0]
        array(['CAT'], dtype=object)
    """
    action = _text(case_change_action)
    if action not in ("NONE", "LOWER", "UPPER"):
        raise KernelError(f"StringNormalizer: case_change_action must be NONE, LOWER or UPPER, "
                          f"got {action!r}")
    shape = np.shape(X)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1):
        raise KernelError(f"StringNormalizer: X must have shape [C] or [1, C], got {shape}")
    words = _strings(X).reshape(-1)
    if stopwords:
        stops = np.array([_text(s) for s in stopwords], dtype=np.str_)
        if is_case_sensitive:
            keep = ~np.isin(words, stops)
        else:
            keep = ~np.isin(np.strings.lower(words), np.strings.lower(stops))
        words = words[keep]
    if action == "LOWER":
        words = np.strings.lower(words)
    elif action == "UPPER":
        words = np.strings.upper(words)
    if words.size == 0:
        words = np.array([""])
    result = words.astype(object)
    return (result.reshape(1, -1) if len(shape) == 2 else result,)


def _token_ids(tokens, vocabulary):
    """Each token's index in the sorted `vocabulary`, -1 where it is not there."""
    if len(vocabulary) == 0:
        return np.full(np.shape(tokens), -1, dtype=np.int64)
    position = np.searchsorted(vocabulary, tokens)
    clipped = np.minimum(position, len(vocabulary) - 1)
    return np.where(vocabulary[clipped] == tokens, clipped, -1)


@kernel("TfIdfVectorizer", since=9)
def tf_idf_vectorizer(xp, X, *, mode, min_gram_length, max_gram_length, max_skip_count,
                      ngram_counts, ngram_indexes, pool_int64s=None, pool_strings=None,
                      weights=None):
    """Counts of the pool's n-grams (tokens `skip` apart, every skip up to `max_skip_count`) in
    each row of X [C] or [N, C], at `ngram_indexes`; weighted as `mode` (TF, IDF, TFIDF) says.

    Example:
        >>> import numpy as np
        >>> tf_idf_vectorizer(np, np.array([1, 2, 1, 2]), mode="TF", min_gram_length=2,
        ...                   max_gram_length=2, max_skip_count=0, ngram_counts=[0, 0],
        ...                   ngram_indexes=[0], pool_int64s=[1, 2])[0]
        array([2.], dtype=float32)
    """
    mode = _text(mode)
    if mode not in ("TF", "IDF", "TFIDF"):
        raise KernelError(f"TfIdfVectorizer: mode must be TF, IDF or TFIDF, got {mode!r}")
    if (pool_int64s is None) == (pool_strings is None):
        raise KernelError("TfIdfVectorizer: exactly one of pool_int64s and pool_strings is needed")
    if np.ndim(X) not in (1, 2):
        raise KernelError(f"TfIdfVectorizer: X must have shape [C] or [N, C], got {np.shape(X)}")
    # tokens become ids in the pool's sorted vocabulary (-1: not in the pool), and each n-gram
    # one integer key, so matching is a binary search rather than a pairwise comparison
    if pool_strings is not None:
        pool = np.array([_text(s) for s in pool_strings], dtype=np.str_)
        tokens = _strings(X)
    else:
        pool = np.asarray(pool_int64s, dtype=np.int64)
        tokens = X if xp is np else xp.asnumpy(X)
    vocabulary = np.unique(pool)
    pool, rows = _token_ids(pool, vocabulary), _token_ids(tokens, vocabulary)
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    out_size = max(ngram_indexes) + 1
    counts = np.zeros((rows.shape[0], out_size), dtype=np.int64)
    starts = list(ngram_counts) + [len(pool)]
    ordinal = 0  # n-grams are numbered across all sizes, in pool order
    for n in range(1, len(ngram_counts) + 1):
        grams = pool[starts[n - 1]:starts[n]].reshape(-1, n)
        targets = np.asarray(ngram_indexes[ordinal:ordinal + len(grams)], dtype=np.int64)
        ordinal += len(grams)
        if not min_gram_length <= n <= max_gram_length or len(grams) == 0:
            continue
        if len(vocabulary) ** n >= 2 ** 63:
            raise KernelError(f"TfIdfVectorizer: {n}-grams over a vocabulary of "
                              f"{len(vocabulary)} tokens overflow int64 keys")
        place = len(vocabulary) ** np.arange(n - 1, -1, -1, dtype=np.int64)
        gram_keys = grams @ place
        order = np.argsort(gram_keys, kind="stable")
        sorted_keys = gram_keys[order]
        # a unigram is the same at every skip, so it is counted once
        for skip in range(1 if n == 1 else max_skip_count + 1):
            span = (n - 1) * (skip + 1)
            if span >= rows.shape[1]:
                break
            at = np.arange(rows.shape[1] - span)[:, None] + np.arange(n) * (skip + 1)
            windows = rows[:, at]  # [rows, starts, n]
            keys = windows @ place
            position = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
            found = (windows >= 0).all(axis=-1) & (sorted_keys[position] == keys)
            row_of, _ = np.nonzero(found)
            np.add.at(counts, (row_of, targets[order[position[found]]]), 1)
    if mode == "TF":
        result = counts.astype(np.float32)
    else:
        scale = (np.ones(out_size, np.float32) if weights is None or len(weights) == 0
                 else np.asarray(weights, dtype=np.float32))
        result = ((counts > 0) if mode == "IDF" else counts) * scale
    result = result.astype(np.float32, copy=False)
    result = result[0] if np.ndim(X) == 1 else result
    return (result if xp is np else xp.asarray(result),)
