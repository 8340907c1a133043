"""Kernels of the edge runtime, shared with authoring's forward and backward passes.

Each module registers its kernels in `registry` when imported; the list below is explicit so
that what is loaded never depends on what happens to lie in the folder.
"""

from modelkit.edge_runtime.kernels import registry
from modelkit.edge_runtime.kernels import (  # noqa: F401  (imported to register their kernels)
    elementwise,
    reduce,
    shape,
    indexing,
    quantize,
    matmul,
    conv,
    pool,
    norm,
    softmax,
    rnn,
    resize,
    ml,
    loss,
    vision,
    misc,
    signal,
    text,
)
from modelkit.edge_runtime.kernels.registry import kernel, lookup, register, registered_ops

__all__ = ["kernel", "lookup", "register", "registered_ops", "registry"]
