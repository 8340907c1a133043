"""Request bodies to feeds and outputs to response bodies, for both APIs, checked against the
model's inputs before anything reaches a worker.

Every problem is a `BadRequest` naming the input, what the model expects and what arrived.

Example:
    >>> from modelkit.edge_runtime.session import TensorSpec
    >>> specs = [TensorSpec("x", "float32", ("batch", 2))]
    >>> request = {"id": "7", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    >>> feeds, outputs = v2_feeds(request, specs, [TensorSpec("y", "float32", ("batch", 2))])
    >>> feeds["x"].dtype, feeds["x"].shape, outputs
    (dtype('float32'), (1, 2), None)
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from modelkit.edge_runtime.serving.datatypes import NUMPY_TO_V2
from modelkit.edge_runtime.serving.errors import BadRequest

MAX_RANK = 32  # numpy's own limit is 64; no model input of ours comes near either


def parse_json(body: bytes):
    """The JSON document in `body`, or `BadRequest`.

    Example:
        >>> parse_json(b"{oops")
        Traceback (most recent call last):
        ...
        modelkit.edge_runtime.serving.errors.BadRequest: the request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)
    """
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting bombs
        raise BadRequest(f"the request body is not valid JSON: {e}") from None


def dumps(document) -> bytes:
    """Compact JSON; NaN and infinities are written as JavaScript's NaN/Infinity (as Python's and
    Triton's clients read them), since a model may produce them.

    Example:
        >>> dumps({"y": [float("nan")]})
        b'{"y":[NaN]}'
    """
    return json.dumps(document, separators=(",", ":"), allow_nan=True).encode()


def array_from_json(name: str, data, dtype: str) -> np.ndarray:
    """`data` (nested lists of JSON values) as an array of numpy dtype `dtype` ("string" for
    text); refuses values of another kind (floats for an int input, numbers for a bool input,
    out-of-range ints) rather than casting them silently.

    Example:
        >>> array_from_json("x", [[1, 2]], "float32")
        array([[1., 2.]], dtype=float32)
        >>> array_from_json("ids", [1.5], "int64")
        Traceback (most recent call last):
        ...
        modelkit.edge_runtime.serving.errors.BadRequest: input 'ids': expected int64 values, got floating-point numbers
    """
    if not isinstance(data, list):
        data = [data] if isinstance(data, (int, float, str, bool)) else data
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise BadRequest(f"input {name!r}: data is not a rectangular array of values ({e})") from None
    if array.ndim > MAX_RANK:
        raise BadRequest(f"input {name!r}: data is nested {array.ndim} deep; at most {MAX_RANK}")
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(object if dtype == "string" else dtype)
    allowed = {"string": "U", "bool": "b"}.get(dtype, "iu" if np.dtype(dtype).kind in "iu" else "iuf")
    if kind not in allowed:
        raise BadRequest(f"input {name!r}: expected {dtype} values, got {_KIND_NAMES.get(kind, 'mixed values')}")
    if dtype == "string":
        return array.astype(object)
    if kind in "iu" and np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise BadRequest(f"input {name!r}: values must lie in [{info.min}, {info.max}] for"
                             f" {dtype}; got [{array.min()}, {array.max()}]")
    return array.astype(dtype)


_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "floating-point numbers",
               "U": "strings", "O": "mixed or out-of-range values"}


def v2_feeds(request, inputs: list, outputs: list) -> tuple[dict, list | None]:
    """Feeds and requested output names (None = all) from a v2 `$inference_request`.

    Example: see the module docstring.
    """
    if not isinstance(request, dict):
        raise BadRequest("the inference request must be a JSON object with an 'inputs' list")
    if "id" in request and not isinstance(request["id"], str):
        raise BadRequest(f"'id' must be a string, got {type(request['id']).__name__}")
    _check_parameters(request.get("parameters"), "the request")
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest("the inference request needs a non-empty 'inputs' list")
    specs = {s.name: s for s in inputs}
    feeds = {}
    for i, tensor in enumerate(tensors):
        name, array = _v2_tensor(i, tensor, specs)
        if name in feeds:
            raise BadRequest(f"input {name!r} is given twice")
        feeds[name] = array
    return feeds, _v2_requested_outputs(request.get("outputs"), outputs)


def _v2_tensor(i: int, tensor, specs: dict) -> tuple[str, np.ndarray]:
    if not isinstance(tensor, dict):
        raise BadRequest(f"inputs[{i}] must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise BadRequest(f"inputs[{i}] lacks {missing}")
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(name, str) or name not in specs:
        raise BadRequest(f"inputs[{i}]: unknown input {name!r}; the model's inputs are {list(specs)}")
    _check_parameters(tensor.get("parameters"), f"input {name!r}")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadRequest(f"input {name!r}: shape must be a list of at most {MAX_RANK}"
                         f" non-negative integers, got {shape!r}"[:300])
    expected = NUMPY_TO_V2.get(specs[name].dtype)
    if datatype != expected:
        raise BadRequest(f"input {name!r}: the model expects datatype {expected}, got {datatype!r}"[:300])
    array = array_from_json(name, tensor["data"], specs[name].dtype)
    if array.size != math.prod(shape):
        raise BadRequest(f"input {name!r}: shape {shape} needs {math.prod(shape)} elements,"
                         f" data holds {array.size}")
    return name, array.reshape(shape)


def _check_parameters(parameters, where: str) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    if "binary_data_size" in parameters or parameters.get("binary_data_output") is True:
        raise BadRequest(f"{where}: the binary tensor data extension is not supported; send"
                         " the data as JSON")


def _v2_requested_outputs(requested, outputs: list) -> list | None:
    if requested is None:
        return None
    known = [s.name for s in outputs]
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
    names = []
    for i, output in enumerate(requested):
        if not isinstance(output, dict) or output.get("name") not in known:
            got = output.get("name") if isinstance(output, dict) else output
            raise BadRequest(f"outputs[{i}]: unknown output {got!r}; the model's outputs are {known}"[:400])
        _check_parameters(output.get("parameters"), f"output {output['name']!r}")
        names.append(output["name"])
    return names


def v2_response(model: str, version: str, request_id, results: dict, names: list) -> dict:
    """The v2 `$inference_response` for the outputs `names` of `results`.

    Example:
        >>> v2_response("m", "1", "7", {"y": np.zeros((1, 2), np.float32)}, ["y"])["outputs"]
        [{'name': 'y', 'datatype': 'FP32', 'shape': [1, 2], 'data': [0.0, 0.0]}]
    """
    response = {"model_name": model, "model_version": version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = [{"name": n, "datatype": NUMPY_TO_V2.get(_dtype_name(results[n]), "BYTES"),
                            "shape": list(results[n].shape), "data": results[n].ravel().tolist()}
                           for n in names]
    return response


def _dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OUS" else array.dtype.name


def torchserve_feeds(body: bytes, content_type: str, inputs: list) -> dict:
    """Feeds from a `/predictions` body: JSON `{"input": nested lists}` (a bare list for a
    single-input model) or `.npy` bytes (`application/x-npy`, single-input models).

    Example:
        >>> from modelkit.edge_runtime.session import TensorSpec
        >>> torchserve_feeds(b'[[1, 2]]', "application/json", [TensorSpec("x", "int64", ("n", 2))])
        {'x': array([[1, 2]])}
    """
    if content_type in ("application/x-npy", "application/octet-stream"):
        if len(inputs) != 1:
            raise BadRequest(f".npy bodies are for single-input models; this one takes"
                             f" {[s.name for s in inputs]}: send JSON")
        return {inputs[0].name: array_from_npy(body)}
    document = parse_json(body)
    if isinstance(document, list) and len(inputs) == 1:
        document = {inputs[0].name: document}
    if not isinstance(document, dict):
        raise BadRequest(f"the body must be a JSON object mapping input names"
                         f" {[s.name for s in inputs]} to nested lists")
    specs = {s.name: s for s in inputs}
    unknown = [n for n in document if n not in specs]
    if unknown:
        raise BadRequest(f"unknown input(s) {unknown[:10]}; the model's inputs are {list(specs)}"[:400])
    return {n: array_from_json(n, data, specs[n].dtype) for n, data in document.items()}


def array_from_npy(body: bytes) -> np.ndarray:
    """The array in `.npy` bytes, read without pickle and without trusting the header: the data
    length must match the declared shape exactly.

    Example:
        >>> array_from_npy(npy_bytes(np.arange(3, dtype=np.int8)))
        array([0, 1, 2], dtype=int8)
    """
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, TypeError, SyntaxError, OverflowError) as e:
        raise BadRequest(f"the body is not a valid .npy file: {e}"[:400]) from None
    if dtype.hasobject or dtype.kind not in "biuf" or len(shape) > MAX_RANK:
        raise BadRequest(f".npy array of dtype {dtype} and rank {len(shape)} is not accepted:"
                         " numeric dtypes only, no objects")
    count = math.prod(shape)
    if len(body) - stream.tell() != count * dtype.itemsize:
        raise BadRequest(f".npy header declares shape {shape} ({count * dtype.itemsize} bytes of"
                         f" {dtype}) but {len(body) - stream.tell()} data bytes follow")
    array = np.frombuffer(body, dtype, count, offset=stream.tell())
    array = array.reshape(shape, order="F" if fortran_order else "C")
    return array.astype(dtype.newbyteorder("="), copy=False)


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as `.npy` file bytes.

    Example:
        >>> npy_bytes(np.zeros(1, np.float32))[:6]
        b'\\x93NUMPY'
    """
    out = io.BytesIO()
    np.save(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def check_feeds(feeds: dict, inputs: list) -> None:
    """Refuse feeds whose names, dtypes, ranks, static dims or symbolic dims (one value per name
    across all inputs) do not fit the model's inputs.

    Example:
        >>> from modelkit.edge_runtime.session import TensorSpec
        >>> check_feeds({"x": np.zeros((2, 3), np.float32)}, [TensorSpec("x", "float32", ("n", 4))])
        Traceback (most recent call last):
        ...
        modelkit.edge_runtime.serving.errors.BadRequest: input 'x': expected shape ['n', 4], got (2, 3) (dim 1 must be 4)
    """
    missing = [s.name for s in inputs if s.name not in feeds]
    if missing:
        raise BadRequest(f"missing input(s) {missing}; the model's inputs are {[s.name for s in inputs]}")
    bound: dict[str, tuple[int, str]] = {}
    for spec in inputs:
        array = feeds[spec.name]
        if _dtype_name(array) != spec.dtype:
            raise BadRequest(f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype}")
        if spec.shape is None:
            continue
        if array.ndim != len(spec.shape):
            raise BadRequest(f"input {spec.name!r}: expected rank {len(spec.shape)} (shape"
                             f" {list(spec.shape)}), got shape {array.shape}")
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
            if isinstance(want, int) and want != got:
                raise BadRequest(f"input {spec.name!r}: expected shape {list(spec.shape)}, got"
                                 f" {array.shape} (dim {axis} must be {want})")
            if isinstance(want, str):
                seen = bound.setdefault(want, (got, spec.name))
                if seen[0] != got:
                    raise BadRequest(f"input {spec.name!r}: dim {axis} ({want!r}) is {got}, but"
                                     f" input {seen[1]!r} set {want!r} to {seen[0]}")


def batch_key(feeds: dict) -> tuple:
    """What two requests must share to be stacked: dtypes and all dims but the first.

    Example:
        >>> batch_key({"x": np.zeros((3, 4), np.float32)})
        (('x', 'float32', (4,)),)
    """
    return tuple((name, a.dtype.name, a.shape[1:]) for name, a in feeds.items())
