"""`autograd.Function`: a custom op with a hand-written backward, as in PyTorch.

Example:
    >>> import modelkit.authoring as mk
    >>> class Cube(Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x ** 3
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         (x,) = ctx.saved_tensors
    ...         return grad * 3 * x ** 2
    >>> x = mk.tensor([2.0], requires_grad=True)
    >>> Cube.apply(x).backward()
    >>> x.grad
    tensor([12.])
"""

from __future__ import annotations

from modelkit.authoring.grad_mode import no_grad, state
from modelkit.authoring.ops.registry import Node, OpDef
from modelkit.authoring.tensor import Tensor


class FunctionCtx:
    """What `forward` hands to `backward`: saved tensors, `needs_input_grad`, any attribute."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self._saved_versions = ()

    def save_for_backward(self, *tensors):
        self._saved = tensors
        self._saved_versions = tuple(t._version[0] if t is not None else 0 for t in tensors)

    @property
    def saved_tensors(self):
        for t, version in zip(self._saved, self._saved_versions):
            if t is not None and t._version[0] != version:
                raise RuntimeError("one of the variables needed for gradient computation has "
                                   f"been modified by an inplace operation: [Tensor of shape "
                                   f"{list(t.shape)}] is at version {t._version[0]}; expected "
                                   f"version {version} instead.")
        return self._saved

    def mark_non_differentiable(self, *tensors):
        self._non_differentiable = {id(t) for t in tensors}


class Function:
    """Subclass with static `forward(ctx, *args)` and `backward(ctx, *grads)`; call `.apply`.

    `backward` returns one gradient (Tensor or None) per `forward` argument.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a Function subclass must define forward(ctx, ...)")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("a Function subclass must define backward(ctx, ...) to be "
                                  "differentiated")

    @classmethod
    def apply(cls, *args):
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        inputs = tuple(args[i] for i in positions)
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = FunctionCtx(needs)
        with no_grad():
            outputs = cls.forward(ctx, *args)
        single = isinstance(outputs, Tensor)
        outs = (outputs,) if single else tuple(outputs)
        if state.grad_enabled and any(needs):
            op = _custom_op(cls, positions, len(outs))
            node = Node(op, inputs, None, {}, tuple(o.array for o in outs), ctx,
                        tuple(needs[i] for i in positions))
            skip = getattr(ctx, "_non_differentiable", set())
            for index, out in enumerate(outs):
                if out.array.dtype.kind == "f" and id(out) not in skip:
                    out._node, out._index, out.requires_grad = node, index, True
        return outputs


def _custom_op(cls, positions, n_outputs) -> OpDef:
    """An unregistered OpDef whose vjp calls `cls.backward` (tensors in, arrays out)."""
    op = OpDef(cls.__name__, None, None, n_outputs=n_outputs, saves_inputs=False)
    op.backward_name = cls.__name__ + "Backward"

    def vjp(node, *grads):
        ctx = node.saved
        result = cls.backward(ctx, *(Tensor._wrap(g) for g in grads))
        result = (result,) if isinstance(result, Tensor) or result is None else tuple(result)
        if len(result) != len(ctx.needs_input_grad):
            raise RuntimeError(f"function {cls.__name__}Backward returned an incorrect number of "
                               f"gradients (expected {len(ctx.needs_input_grad)}, got "
                               f"{len(result)})")
        return tuple(result[i].array if isinstance(result[i], Tensor) else None
                     for i in positions)

    op.vjp(vjp)
    return op
