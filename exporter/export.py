"""`export`: trace a model's forward pass into a `Graph`, optimise it, write `.onnx` / `.mkb`.

Example:
    >>> import os, tempfile, numpy as np
    >>> import modelkit.authoring as mk
    >>> model = mk.nn.Sequential(mk.nn.Linear(4, 3), mk.nn.ReLU())
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp.onnx")
    >>> graph = export(model, (np.ones((2, 4), np.float32),), path,
    ...                dynamic_axes={"input": {0: "batch"}})
    >>> [n.op_type for n in graph.nodes], graph.inputs[0].shape
    (['Gemm', 'Relu'], ('batch', 4))
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Optional

import numpy as np

from modelkit.authoring.grad_mode import no_grad
from modelkit.authoring.tensor import Tensor
from modelkit.exporter import mkb_writer, onnx_writer
from modelkit.exporter.errors import ExportError
from modelkit.exporter.ir import Graph
from modelkit.exporter.passes import optimize as run_passes
from modelkit.exporter.trace import Tracer, probe_run

FORMATS = ("onnx", "mkb", "both")


def export(model, example_inputs, path=None, *, format: Optional[str] = None,  # noqa: A002
           input_names=None, output_names=None, dynamic_axes=None, opset: int = 17,
           optimize: bool = True) -> Graph:
    """Trace `model(*example_inputs)` in eval mode into a `Graph`; write it when `path` is given.

    `example_inputs`: a tensor / numpy array or a tuple of them. `format`: "onnx", "mkb" or
    "both" (default: from the suffix of `path`). `dynamic_axes`: PyTorch's form,
    `{"x": {0: "batch"}}` or `{"x": [0]}`. `optimize`: run the graph passes (constant folding,
    dead-node and identity removal, Conv/Linear+BatchNorm folding).

    Example:
        >>> import modelkit.authoring as mk
        >>> graph = export(mk.nn.Conv2d(1, 2, 3), mk.ones(1, 1, 5, 5))
        >>> [n.op_type for n in graph.nodes], [v.name for v in graph.initializers]
        (['Conv'], ['weight', 'bias'])
    """
    graph = trace(model, example_inputs, input_names=input_names, output_names=output_names,
                  dynamic_axes=dynamic_axes, opset=opset)
    if optimize:
        run_passes(graph, opset)
    if path is not None:
        write(graph, path, format)
    return graph


def trace(model, example_inputs, *, input_names=None, output_names=None, dynamic_axes=None,
          opset: int = 17) -> Graph:
    """The traced graph before any pass (see `export`).

    Example:
        >>> import modelkit.authoring as mk
        >>> [n.op_type for n in trace(lambda x: x.clone().relu(), mk.ones(2)).nodes]
        ['Identity', 'Relu']
    """
    tensors = _input_tensors(example_inputs, model)
    names = _input_names(input_names, model, len(tensors))
    axes = _dynamic_axes(dynamic_axes, names, tensors)
    graph = Graph(opsets={"": opset})
    with _eval_mode(model), no_grad():
        probe = probe_run(model, _probe_inputs(tensors, names, axes)) if axes else None
        tracer = Tracer(graph, opset, _param_names(model), probe, _module_names(model))
        for name, tensor in zip(names, tensors):
            tracer.add_input(name, tensor, axes.get(name, {}))
        result = tracer.run(model, tensors)
        tracer.check_probe_complete()
    _add_outputs(graph, tracer, result, output_names, model)
    _name_output_axes(graph, dynamic_axes or {}, names)
    return graph


def write(graph: Graph, path, format: Optional[str] = None) -> list[Path]:  # noqa: A002
    """Write `graph` as `.onnx`, `.mkb` or both; returns the paths written.

    Example:
        >>> import os, tempfile
        >>> g = Graph(); x = g.add_input("x", "float32", (2,)); g.outputs.append(x)
        >>> [p.suffix for p in write(g, os.path.join(tempfile.mkdtemp(), "m"), "both")]
        ['.onnx', '.mkb']
    """
    path = Path(path)
    if format is None:
        format = path.suffix.lstrip(".").lower()  # noqa: A001
        if format not in ("onnx", "mkb"):
            raise ExportError(f"cannot tell the format from the path {str(path)!r}: end it in "
                              ".onnx or .mkb, or pass format='onnx', 'mkb' or 'both'")
    if format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {format!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if format in ("onnx", "both"):
        target = path.with_suffix(".onnx") if format == "both" else path
        onnx_writer.save(graph, target, opset=graph.opsets.get(""))
        written.append(target)
    if format in ("mkb", "both"):
        target = path.with_suffix(".mkb") if format == "both" else path
        mkb_writer.save(graph, target)
        written.append(target)
    return written


# ---- inputs --------------------------------------------------------------------------------
def _input_tensors(example_inputs, model) -> list[Tensor]:
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    tensors = []
    for i, item in enumerate(items):
        if isinstance(item, Tensor):
            array = item.array
        elif isinstance(item, np.ndarray):
            array = item
        else:
            raise ExportError(f"example input {i} is a {type(item).__name__}; every example "
                              f"input to {_where(model)} must be a Tensor or a numpy array "
                              "(wrap a number as mk.tensor(value))")
        tensors.append(Tensor._wrap(np.array(array)))
    return tensors


def _input_names(input_names, model, count: int) -> list[str]:
    if input_names is not None:
        names = list(input_names)
        if len(names) != count:
            raise ExportError(f"input_names has {len(names)} names for {count} example inputs")
    else:
        names = _forward_parameters(model)[:count]
        names += [f"input_{i}" for i in range(len(names), count)]
    if len(set(names)) != len(names):
        raise ExportError(f"input names must be unique, got {names}")
    return names


def _forward_parameters(model) -> list[str]:
    fn = getattr(model, "forward", model)
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _dynamic_axes(dynamic_axes, names, tensors) -> dict:
    """{input name: {dim: (axis name, probe size)}}; each axis name gets its own probe size."""
    if not dynamic_axes:
        return {}
    ranks = {name: t.array.ndim for name, t in zip(names, tensors)}
    result, sizes = {}, {}
    for name, dims in dynamic_axes.items():
        if not isinstance(dims, dict):
            dims = {d: f"{name}_dynamic_axes_{k + 1}" for k, d in enumerate(dims)}
        if name not in ranks:
            continue  # output axes follow from the inputs
        tensor = tensors[names.index(name)]
        for dim, axis_name in dims.items():
            if not -ranks[name] <= dim < ranks[name]:
                raise ExportError(f"dynamic_axes: input {name!r} has {ranks[name]} dims, so "
                                  f"dim {dim} does not exist")
            dim %= ranks[name]
            size = tensor.array.shape[dim]
            if axis_name in sizes and sizes[axis_name][0] != size:
                raise ExportError(f"dynamic_axes: axis {axis_name!r} has size {size} in input "
                                  f"{name!r} but {sizes[axis_name][0]} elsewhere")
            # each axis moves by its own step, so the tracer can tell them apart
            sizes.setdefault(axis_name, (size, size + 2 * (len(sizes) + 1)))
            result.setdefault(name, {})[dim] = (axis_name, sizes[axis_name][1])
    return result


def _probe_inputs(tensors, names, axes) -> tuple:
    probe = []
    for name, tensor in zip(names, tensors):
        array = tensor.array
        for dim, (_, size) in axes.get(name, {}).items():
            array = np.take(array, np.arange(size) % max(array.shape[dim], 1), axis=dim)
        probe.append(Tensor._wrap(array))
    return tuple(probe)


def _param_names(model) -> dict:
    if not hasattr(model, "state_dict"):
        return {}
    names = {}
    for key, tensor in model.state_dict().items():
        names.setdefault(id(tensor.array), key)
    return names


def _module_names(model) -> dict:
    if not hasattr(model, "named_modules"):
        return {}
    return {id(m): name for name, m in model.named_modules()}


@contextlib.contextmanager
def _eval_mode(model):
    training = getattr(model, "training", None)
    if training is not None:
        model.eval()
    try:
        yield
    finally:
        if training is not None:
            model.train(training)


# ---- outputs -------------------------------------------------------------------------------
def flat_outputs(result, path: str = "output", model=None) -> list[tuple[str, Tensor]]:
    """[(path, tensor)] for a model's result: a tensor, or tuples, lists, dicts of them.

    Example:
        >>> import modelkit.authoring as mk
        >>> [p for p, _ in flat_outputs({"a": mk.ones(1), "b": (mk.ones(1),)})]
        ["output['a']", "output['b'][0]"]
    """
    if isinstance(result, Tensor):
        return [(path, result)]
    if isinstance(result, dict):
        return [item for key, value in result.items()
                for item in flat_outputs(value, f"{path}[{key!r}]", model)]
    if isinstance(result, (tuple, list)):
        return [item for i, value in enumerate(result)
                for item in flat_outputs(value, f"{path}[{i}]", model)]
    raise ExportError(f"{_where(model)} returns a {type(result).__name__} as {path}; a model "
                      "to export returns tensors (alone, or in a tuple, list or dict)")


def _add_outputs(graph: Graph, tracer: Tracer, result, output_names, model) -> None:
    flat = flat_outputs(result, "output", model)
    if output_names is not None:
        names = list(output_names)
        if len(names) != len(flat):
            raise ExportError(f"output_names has {len(names)} names but the model returns "
                              f"{len(flat)} tensors")
    elif isinstance(result, dict):
        names = [str(k) for k in result]
    else:
        names = ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]
    if len(flat) != len(names):  # a dict of tuples: fall back to positions
        names = [f"output_{i}" for i in range(len(flat))]
    for name, (_, tensor) in zip(names, flat):
        value = tracer.value_of(tensor)
        if value is None:
            value = graph.add_initializer(graph.unique_value_name("const"), tensor.array.copy())
        if value.producer is None or value in graph.outputs:
            # a graph output needs its own name: pass inputs, constants and repeats through
            source = value
            value = graph.add_node("Identity", [source]).outputs[0]
            value.dtype, value.shape = source.dtype, source.shape
        taken = graph.values.get(name)
        if taken is not None and taken is not value:
            raise ExportError(f"output name {name!r} is already the name of an input or weight; "
                              "choose other output_names")
        value.name = name
        graph.outputs.append(value)


def _name_output_axes(graph: Graph, dynamic_axes: dict, input_names) -> None:
    """Output dims named in `dynamic_axes` take those names (the tracer names them after the
    input axes they follow); a name that is neither an input nor an output is an error."""
    outputs = {v.name: v for v in graph.outputs}
    for name, dims in dynamic_axes.items():
        if name in input_names:
            continue
        if name not in outputs:
            raise ExportError(f"dynamic_axes names {name!r}, which is neither an input "
                              f"{list(input_names)} nor an output {list(outputs)}")
        value = outputs[name]
        shape = list(value.shape)
        if not isinstance(dims, dict):
            dims = {d: shape[d] if isinstance(shape[d], str) else f"{name}_dynamic_axes_{k + 1}"
                    for k, d in enumerate(dims)}
        for dim, axis_name in dims.items():
            if not -len(shape) <= dim < len(shape) or isinstance(shape[dim], int):
                raise ExportError(f"dynamic_axes: dim {dim} of output {name!r} (shape "
                                  f"{tuple(shape)}) does not follow any dynamic input axis")
            shape[dim] = axis_name
        value.shape = tuple(shape)


def _where(model) -> str:
    """'file:line (forward)' of the model's forward, for errors about the whole model."""
    if model is None:
        return "the model"
    fn = getattr(type(model), "forward", None) or model
    try:
        lines, start = inspect.getsourcelines(fn)
        return f"{inspect.getsourcefile(fn)}:{start} ({getattr(fn, '__qualname__', 'forward')})"
    except (TypeError, OSError):
        return repr(type(model).__name__)

