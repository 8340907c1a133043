"""Expand quantized weights to the dtype the kernels compute in, once, when a model loads.

A `.mkb` file may store a weight in a narrow type with `Model.quantization` parameters
(`converters.quantize` writes them): int8 with per-output-channel float32 scales, or float16 with
scale 1.0. `real = (q - zero_point) * scale`, computed in the scale's dtype, so int8 and float16
weights come back as float32 and every kernel keeps running in float32.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format.model import Model, Node, Quantization, ValueInfo
    >>> q = Quantization(np.array([0.5, 2.0], np.float32), np.zeros(2, np.int8), axis=0)
    >>> m = Model([ValueInfo("x", "float32", (1, 2))], [ValueInfo("y", "float32", (1, 2))],
    ...           [Node("MatMul", ["x", "w"], ["y"])],
    ...           initializers={"w": np.array([[2, -4], [1, 3]], np.int8)}, quantization={"w": q})
    >>> dequantize_weights(m).initializers["w"]
    array([[ 1., -2.],
           [ 2.,  6.]], dtype=float32)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format.model import Model, Quantization


def dequantize_weights(model: Model) -> Model:
    """`model` with every quantized initializer expanded to its real values (a new `Model`; the
    given one is unchanged). A model without quantized initializers is returned as it is."""
    quantized = [name for name in model.quantization if name in model.initializers]
    if not quantized:
        return model
    initializers = dict(model.initializers)
    for name in quantized:
        initializers[name] = dequantize(initializers[name], model.quantization[name], name)
    return dataclasses.replace(
        model,
        initializers=initializers,
        quantization={k: v for k, v in model.quantization.items() if k not in quantized},
        value_info=[v for v in model.value_info if v.name not in quantized],
    )


def dequantize(stored: np.ndarray, q: Quantization, name: str = "") -> np.ndarray:
    """`(stored - zero_point) * scale` in the scale's dtype; per-channel parameters broadcast
    along `q.axis`.

    Example:
        >>> q = Quantization(np.array(1.0, np.float32), np.array(0.0, np.float16))
        >>> dequantize(np.array([1.5], np.float16), q)
        array([1.5], dtype=float32)
    """
    scale, zero_point = np.asarray(q.scale), np.asarray(q.zero_point)
    if scale.dtype.kind != "f":
        raise ModelFormatError(f"quantized weight {name!r}: scale must be floating point, got "
                               f"{scale.dtype}")
    if q.axis is not None and scale.ndim == 1:
        axis = q.axis % stored.ndim
        if scale.shape[0] != stored.shape[axis]:
            raise ModelFormatError(f"quantized weight {name!r}: {scale.shape[0]} scales for axis"
                                   f" {axis} of size {stored.shape[axis]}")
        along = [1] * stored.ndim
        along[axis] = -1
        scale, zero_point = scale.reshape(along), zero_point.reshape(along)
    real = stored.astype(scale.dtype)
    if np.any(zero_point):
        real -= zero_point.astype(scale.dtype)
    return real * scale
