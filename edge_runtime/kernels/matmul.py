"""MatMul, Gemm, Einsum, MatMulInteger and QLinearMatMul.

All of them end in one BLAS call where the shapes allow: numpy's matmul batches over leading
dims, Gemm folds alpha/beta only when they are not 1, and Einsum lets numpy choose a
contraction order (`optimize=True` routes pairwise contractions through BLAS).

Example:
    >>> import numpy as np
    >>> a = np.ones((2, 3), np.float32); b = np.ones((3, 4), np.float32)
    >>> matmul(np, a, b)[0].shape
    (2, 4)
"""

from __future__ import annotations

from modelkit.edge_runtime.errors import KernelError
from modelkit.edge_runtime.kernels.registry import kernel


@kernel("MatMul")
def matmul(xp, a, b):
    """ONNX MatMul: numpy matmul semantics (batched, broadcast over leading dims, 1-D promoted).

    Example:
        >>> import numpy as np
        >>> matmul(np, np.ones((5, 2, 3)), np.ones((3, 4)))[0].shape
        (5, 2, 4)
    """
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise KernelError(f"MatMul: inner dims differ: A has shape {a.shape}, B has shape "
                          f"{b.shape}")
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        # NOTE: one (batch*rows, K) GEMM instead of numpy's loop of one GEMM per batch entry
        return (xp.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[1:]),)
    return (xp.matmul(a, b),)


@kernel("Gemm")
def gemm(xp, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """ONNX Gemm: alpha * A' @ B' + beta * C, with A' = A.T if transA and B' = B.T if transB.

    Example:
        >>> import numpy as np
        >>> gemm(np, np.ones((2, 3), np.float32), np.ones((4, 3), np.float32),
        ...      np.ones(4, np.float32), transB=1)[0][0]
        array([4., 4., 4., 4.], dtype=float32)
    """
    a = a.T if transA else a
    b = b.T if transB else b
    if a.shape[1] != b.shape[0]:
        raise KernelError(f"Gemm: inner dims differ: A' has shape {a.shape}, B' has shape "
                          f"{b.shape} (transA={transA}, transB={transB})")
    y = xp.matmul(a, b)
    if alpha != 1.0:
        y *= y.dtype.type(alpha)
    if c is not None and beta != 0.0:
        y += c if beta == 1.0 else c * c.dtype.type(beta)
    return (y,)


def prepare_gemm(xp, attrs: dict, constants: list):
    """A Gemm kernel for a node whose B (and C, if any) are load-time constants with alpha =
    beta = 1 and no transA (a Linear layer), or None: B' is transposed once, and a run is one
    matmul plus the bias added in place. Other inputs run `gemm`.

    Example:
        >>> import numpy as np
        >>> b = np.ones((4, 3), np.float32); c = np.arange(4, dtype=np.float32)
        >>> prepare_gemm(np, {"transB": 1}, [None, b, c])(np.ones((2, 3), np.float32), b, c)[0][0]
        array([3., 4., 5., 6.], dtype=float32)
    """
    b, c = (list(constants[1:3]) + [None, None])[:2]
    if (b is None or b.ndim != 2 or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0)
            or (len(constants) > 2 and c is None)):
        return None
    weight = b.T if attrs.get("transB", 0) else b

    def prepared_gemm(a, b_in, c_in=None):
        if b_in is not b or c_in is not c or a.ndim != 2 or a.shape[1] != weight.shape[0]:
            return gemm(xp, a, b_in, c_in, **attrs)
        y = xp.matmul(a, weight)
        if c is not None:
            y += c
        return (y,)
    return prepared_gemm


@kernel("Einsum")
def einsum(xp, *inputs, equation):
    """ONNX Einsum (numpy's einsum notation, including "...").

    Example:
        >>> import numpy as np
        >>> einsum(np, np.ones((2, 3)), np.ones((3, 4)), equation="ij,jk->ik")[0][0, 0]
        np.float64(3.0)
    """
    equation = equation.replace(" ", "")
    dtype = inputs[0].dtype
    if dtype.kind == "V":
        # NOTE: extension float types such as ml_dtypes' bfloat16 have no einsum loop
        inputs = [x.astype(xp.float32) for x in inputs]
    result = xp.einsum(equation, *inputs, optimize=len(inputs) > 1)
    return (xp.asarray(result).astype(dtype, copy=False),)


def _centered(xp, q, zero_point):
    wide = q.astype(xp.int32)
    if zero_point is not None:
        wide -= zero_point.astype(xp.int32)
    return wide


@kernel("MatMulInteger", since=10)
def matmul_integer(xp, a, b, a_zero_point=None, b_zero_point=None):
    """ONNX MatMulInteger: (A - a_zero_point) @ (B - b_zero_point) in int32.

    A per-row a_zero_point has shape (M,), a per-column b_zero_point shape (N,).

    Example:
        >>> import numpy as np
        >>> a = np.array([[3, 4]], np.uint8); b = np.array([[1], [1]], np.uint8)
        >>> matmul_integer(np, a, b, np.array(1, np.uint8))[0]
        array([[5]], dtype=int32)
    """
    if a_zero_point is not None and a_zero_point.ndim == 1 and a.ndim >= 2:
        a_zero_point = a_zero_point.reshape(-1, 1)
    return (xp.matmul(_centered(xp, a, a_zero_point), _centered(xp, b, b_zero_point)),)


@kernel("QLinearMatMul", since=10)
def qlinear_matmul(xp, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
                   y_zero_point):
    """ONNX QLinearMatMul: the quantized product, requantized to y's scale and zero point.

    Example:
        >>> import numpy as np
        >>> q = np.array([[2, 2]], np.uint8); s = np.array(0.5, np.float32)
        >>> z = np.array(0, np.uint8)
        >>> qlinear_matmul(np, q, s, z, q.T.copy(), s, z, s, z)[0]
        array([[4]], dtype=uint8)
    """
    if a_zero_point.ndim == 1 and a_zero_point.size > 1:
        a_zero_point = a_zero_point.reshape(-1, 1)
    if a_scale.ndim == 1 and a_scale.size > 1:
        a_scale = a_scale.reshape(-1, 1)
    product = xp.matmul(_centered(xp, a, a_zero_point).astype(xp.float64),
                        _centered(xp, b, b_zero_point).astype(xp.float64))
    scale = (a_scale.astype(xp.float64) * b_scale.astype(xp.float64)
             / y_scale.astype(xp.float64))
    y = xp.rint(product * scale) + y_zero_point.astype(xp.float64)
    info = xp.iinfo(y_zero_point.dtype)
    return (xp.clip(y, info.min, info.max).astype(y_zero_point.dtype),)
