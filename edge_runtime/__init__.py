"""modelkit's edge runtime: load a `.mkb` (or ONNX) model and run it with numpy.

    >>> import numpy as np
    >>> from modelkit import edge_runtime
    >>> from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
    >>> m = Model(inputs=[ValueInfo("x", "float32", ("n",))],
    ...           outputs=[ValueInfo("y", "float32", ("n",))], nodes=[Node("Relu", ["x"], ["y"])])
    >>> sess = edge_runtime.load(edge_runtime.format.write(m))
    >>> sess.run({"x": np.array([-1.0, 1.0], np.float32)})
    {'y': array([0., 1.], dtype=float32)}

Importing this package imports neither onnx, onnxruntime, cupy, click nor the other modelkit
components (`load_onnx` imports onnx when called).
"""

from modelkit.edge_runtime import format
from modelkit.edge_runtime.custom_ops import register_kernel
from modelkit.edge_runtime.errors import (
    CudaUnavailableError,
    EdgeRuntimeError,
    InvalidInputError,
    KernelError,
    ModelFormatError,
    UnsupportedOpError,
)
from modelkit.edge_runtime.session import Session, TensorSpec, load, load_onnx

__all__ = [
    "CudaUnavailableError",
    "EdgeRuntimeError",
    "InvalidInputError",
    "KernelError",
    "ModelFormatError",
    "Session",
    "TensorSpec",
    "UnsupportedOpError",
    "format",
    "load",
    "load_onnx",
    "register_kernel",
]
