"""`gradcheck`: compare autograd's gradients with float64 central differences.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.randn(3, dtype=mk.float64, requires_grad=True)
    >>> gradcheck(lambda t: (t.sin() * t).sum(), (x,))
    True
"""

from __future__ import annotations

import warnings

import numpy as np

from modelkit.authoring.autograd.engine import grad as autograd_grad
from modelkit.authoring.grad_mode import no_grad
from modelkit.authoring.tensor import Tensor


class GradcheckError(RuntimeError):
    """Analytical and numerical gradients disagree; the message says where and by how much."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, *, raise_exception=True) -> bool:
    """Check `fn(*inputs)`'s vjp against central differences for every input that requires grad.

    Inputs should be float64; each output element's gradient row is compared with
    `|analytical - numerical| <= atol + rtol * |numerical|`.
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck expects at least one input Tensor with requires_grad=True")
    if any(t.array.dtype != np.float64 for t in checked):
        warnings.warn("gradcheck inputs are not float64: the numerical gradient will be "
                      "imprecise; use dtype=mk.float64", stacklevel=2)
    outputs = _outputs(fn(*inputs))
    for k, out in enumerate(outputs):
        analytical = _analytical(out, checked)
        numerical = _numerical(fn, inputs, checked, k, eps)
        for i, (a, n) in enumerate(zip(analytical, numerical)):
            bad = np.abs(a - n) > atol + rtol * np.abs(n)
            if bad.any():
                if not raise_exception:
                    return False
                row, col = np.argwhere(bad)[0]
                raise GradcheckError(
                    f"Jacobian mismatch for output {k} with respect to input {i} (shape "
                    f"{tuple(checked[i].shape)}): at [output element {row}, input element {col}] "
                    f"numerical {n[row, col]:.6g} vs analytical {a[row, col]:.6g}\n"
                    f"numerical:\n{n}\nanalytical:\n{a}")
    return True


def _outputs(result):
    outs = (result,) if isinstance(result, Tensor) else tuple(result)
    return [o for o in outs if isinstance(o, Tensor) and o.array.dtype.kind == "f"]


def _analytical(out, checked):
    """Rows of the Jacobian from one vjp per output element."""
    jacobians = [np.zeros((out.array.size, t.array.size)) for t in checked]
    if not out.requires_grad:
        return jacobians
    for row in range(out.array.size):
        seed = np.zeros(out.array.size, dtype=out.array.dtype)
        seed[row] = 1
        grads = autograd_grad(out, checked, grad_outputs=Tensor._wrap(seed.reshape(out.shape)),
                              retain_graph=True, allow_unused=True)
        for jacobian, g in zip(jacobians, grads):
            if g is not None:
                jacobian[row] = g.array.ravel()
    return jacobians


def _numerical(fn, inputs, checked, k, eps):
    jacobians = []
    with no_grad():
        for t in checked:
            flat = t.array.reshape(-1)  # a view: perturbing it perturbs the input
            columns = []
            for j in range(flat.size):
                original = flat[j]
                flat[j] = original + eps
                plus = _outputs(fn(*inputs))[k].array.astype(np.float64).ravel()
                flat[j] = original - eps
                minus = _outputs(fn(*inputs))[k].array.astype(np.float64).ravel()
                flat[j] = original
                columns.append((plus - minus) / (2 * eps))
            jacobians.append(np.stack(columns, axis=1) if columns else np.zeros((0, 0)))
    return jacobians
