"""Reverse-mode autodiff over the recorded graph: `backward` and `grad`.

Nodes are visited once each, consumers before producers; gradients from several consumers are
summed before a node's vjp runs, then the node's saved arrays are freed unless `retain_graph`.

Example:
    >>> import modelkit.authoring as mk
    >>> x = mk.tensor([1.0, 2.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    tensor([2., 4.])
"""

from __future__ import annotations

import numpy as np

from modelkit.authoring.device import array_module
from modelkit.authoring.grad_mode import state
from modelkit.authoring.tensor import Tensor

_FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.")


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate gradients of `tensors` into the `.grad` of the leaves (or only `inputs`).

    `grad_tensors` may be omitted only for scalar outputs (it is then 1).

    Example:
        >>> import modelkit.authoring as mk
        >>> w = mk.ones(3, requires_grad=True)
        >>> backward((w * 2).sum())
        >>> w.grad
        tensor([2., 2., 2.])
    """
    if create_graph:
        raise NotImplementedError("create_graph=True (higher-order gradients) is not supported "
                                  "yet by modelkit.authoring")
    roots = _roots(tensors, grad_tensors)
    only = None if inputs is None else {id(t) for t in _as_tuple(inputs)}
    leaf_grads, _ = _run(roots, bool(retain_graph), wanted=None)
    for t, g in leaf_grads.values():
        if only is None or id(t) in only:
            _accumulate(t, g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of `outputs` with respect to `inputs`, returned (not accumulated into .grad).

    Example:
        >>> import modelkit.authoring as mk
        >>> x = mk.tensor([3.0], requires_grad=True)
        >>> grad((x ** 2).sum(), x)
        (tensor([6.]),)
    """
    if create_graph:
        raise NotImplementedError("autograd.grad(create_graph=True) (higher-order gradients) is "
                                  "not supported yet by modelkit.authoring")
    inputs = _as_tuple(inputs)
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    roots = _roots(outputs, grad_outputs)
    leaf_grads, captured = _run(roots, bool(retain_graph), wanted=inputs)
    results = []
    for i, t in enumerate(inputs):
        g = leaf_grads[id(t)][1] if t._node is None and id(t) in leaf_grads else captured.get(i)
        if g is None and not allow_unused:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}, shape "
                               f"{tuple(t.shape)}) appears to not have been used in the graph. "
                               "Set allow_unused=True if this is the desired behavior.")
        results.append(None if g is None else Tensor._wrap(g))
    return tuple(results)


def _as_tuple(x):
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _roots(tensors, grad_tensors):
    tensors = _as_tuple(tensors)
    if grad_tensors is None or isinstance(grad_tensors, Tensor):
        grad_tensors = (grad_tensors,) * len(tensors) if grad_tensors is None else (grad_tensors,)
    roots = []
    for t, g in zip(tensors, grad_tensors):
        if not t.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                               "grad_fn")
        if g is None:
            if t.array.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs "
                                   f"(got shape {tuple(t.shape)}); pass gradient=")
            g = array_module(t.array).ones_like(t.array)
        else:
            g = array_module(t.array).asarray(g.array if isinstance(g, Tensor) else g,
                                              dtype=t.array.dtype)
            if g.shape != t.array.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output has a shape of "
                                   f"{tuple(g.shape)} and output has a shape of {tuple(t.shape)}")
        roots.append((t, g))
    return roots


def _topological(roots):
    """Nodes reachable from `roots`, every consumer before the nodes that produced its inputs."""
    order, seen = [], set()
    stack = [(node, False) for node in roots]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        for edge in node.edges:
            if type(edge) is tuple and edge[0] not in seen:
                stack.append((edge[0], False))
    order.reverse()
    return order


def _run(roots, retain_graph, wanted):
    """Propagate; return ({id(leaf): (leaf, grad)}, {position in wanted: grad of a non-leaf})."""
    previous, state.grad_enabled = state.grad_enabled, False  # vjps must not record a graph
    try:
        # NOTE: as in PyTorch, inf/nan gradients appear silently; detect_anomaly reports them
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _propagate(roots, retain_graph, wanted)
    finally:
        state.grad_enabled = previous


def _propagate(roots, retain_graph, wanted):
    want_nodes = {}
    for i, t in enumerate(wanted or ()):
        if t._node is not None:
            want_nodes[(t._node, t._index)] = i
    leaf_grads, node_grads, captured = {}, {}, {}
    root_nodes = []
    for t, g in roots:
        if t._node is None:
            _add_leaf(leaf_grads, t, g)
        else:
            _add_output(node_grads, t._node, t._index, g)
            root_nodes.append(t._node)
    for node in _topological(root_nodes):
        grads = node_grads.pop(node, None)
        if grads is None:
            continue
        if node.hooks:
            _run_node_hooks(node, grads)
        if want_nodes:
            for index, g in enumerate(grads):
                if (node, index) in want_nodes:
                    captured[want_nodes[(node, index)]] = g
        input_grads = _call_vjp(node, grads)
        for t, edge, g in zip(node.inputs, node.edges, input_grads):
            if edge is None or g is None:
                continue
            if g.dtype != t.array.dtype:
                g = g.astype(t.array.dtype)
            if type(edge) is tuple:
                _add_output(node_grads, edge[0], edge[1], g)
            else:
                _add_leaf(leaf_grads, edge, g)
        if not retain_graph:
            # the graph structure (edges) stays; saved values and input tensors are released
            node.inputs = node.arrays = node.out = node.saved = None
            node.freed = True
    for t, g in list(leaf_grads.values()):
        if t._hooks:
            for hook in t._hooks:
                replaced = hook(Tensor._wrap(g))
                if replaced is not None:
                    g = replaced.array
            leaf_grads[id(t)] = (t, g)
    return leaf_grads, captured


def _call_vjp(node, grads):
    if node.freed:
        raise RuntimeError(_FREED_MESSAGE)
    _check_versions(node)
    if len(grads) == 1:
        input_grads = node.op.backward(node, grads[0])
    else:
        filled = [g if g is not None else array_module(o).zeros_like(o)
                  for g, o in zip(grads, node.out)]
        input_grads = node.op.backward(node, *filled)
    for t, g in zip(node.inputs, input_grads):
        if g is not None and t is not None and g.shape != t.array.shape:
            raise RuntimeError(f"internal error: vjp of '{node.op.name}' returned a gradient of "
                               f"shape {g.shape} for an input of shape {t.array.shape}")
    if state.anomaly:
        _check_backward(node, grads, input_grads)
    return input_grads


def _check_versions(node):
    for cell, version, k in node.versions:
        if cell[0] != version:
            which = f"input {k}" if k >= 0 else f"output {~k}"
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: {which} of '{node.op.name}' is at version {cell[0]}; "
                f"expected version {version} instead. Modify a clone instead, or do the in-place "
                "change after backward.")


def _check_backward(node, grads, input_grads):
    incoming_finite = all(g is None or bool(np.isfinite(g).all()) for g in grads)
    for i, g in enumerate(input_grads):
        if g is not None and incoming_finite and g.dtype.kind == "f" and not np.isfinite(g).all():
            where = node.source or "<source unknown: graph recorded outside detect_anomaly>"
            raise RuntimeError(f"detect_anomaly: Function '{node.name()}' returned nan/inf "
                               f"values in its {i}th output; the op '{node.op.name}' was called "
                               f"at {where}")


def _run_node_hooks(node, grads):
    for index, hooks in node.hooks.items():
        if grads[index] is None:
            continue
        for hook in hooks:
            replaced = hook(Tensor._wrap(grads[index]))
            if replaced is not None:
                grads[index] = replaced.array


def _add_leaf(leaf_grads, t, g):
    entry = leaf_grads.get(id(t))
    leaf_grads[id(t)] = (t, g if entry is None else entry[1] + g)


def _add_output(node_grads, node, index, g):
    grads = node_grads.get(node)
    if grads is None:
        grads = node_grads[node] = [None] * (len(node.out) if type(node.out) is tuple else 1)
    grads[index] = g if grads[index] is None else grads[index] + g


def _accumulate(t, g):
    """AccumulateGrad: the first gradient is copied (it may alias other arrays), later ones are
    added in place."""
    if t.grad is None:
        t.grad = Tensor._wrap(array_module(g).array(g, dtype=t.array.dtype, copy=True))
    else:
        t.grad.array += g
        t.grad._version[0] += 1
