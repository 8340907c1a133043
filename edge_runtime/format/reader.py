"""Read a `.mkb` file into a `Model`, verifying every byte it relies on.

The Python flatbuffers runtime has no verifier, so this module carries one: `_Decoder` walks the
flatbuffer along the field lists in `_TABLES` (the layout of `modelkit.fbs`), checks every table,
vtable, offset, string and vector against the buffer before reading it, and returns plain dicts.
The generated accessors are not used for reading: they trust the buffer and are several times
slower. Total work and memory are linear in the file size: each decoded object is charged
against a budget equal to the flatbuffer's size, so overlapping or repeated references in a
hostile file fail fast instead of multiplying. Strings are the exception the writer relies on:
a string referenced again costs only its offset and is the same (immutable) str object.

Weights become read-only numpy views on the mapped file (or on the bytes given); nothing is
copied. `read` raises `ModelFormatError` for anything it cannot trust.

Example:
    >>> from modelkit.edge_runtime.errors import ModelFormatError
    >>> from modelkit.edge_runtime.format import Model, Node, ValueInfo, read, write
    >>> m = Model([ValueInfo("x", "float32", ("n",))], [ValueInfo("y", "float32", ("n",))],
    ...           [Node("Relu", ["x"], ["y"], source="net.py:3")])
    >>> read(write(m)) == m
    True
    >>> try:
    ...     read(b"not a model file")
    ... except ModelFormatError as e:
    ...     print(e)
    not a .mkb file: identifier b'a mo' at bytes 4..8, expected b'MKB1'
"""

from __future__ import annotations

import functools
import mmap
import os
import re
import struct
from typing import Union

import numpy as np

from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format import modelkit_generated as fb
from modelkit.edge_runtime.format.model import (
    DTYPES, Model, Node, Quantization, TestVector, ValueInfo,
)

FILE_IDENTIFIER = b"MKB1"
FORMAT_VERSION = (1, 0)
"""The format this code writes and the newest it reads (any 1.x: minor versions only add)."""
MIN_RUNTIME_VERSION = "0.1.0"
"""Oldest modelkit release that reads what this writer writes."""
ALIGNMENT = 64
MAX_RANK = 64  # numpy's limit

DTYPE_CODES = {name: getattr(fb.DType, name.upper()) for name in DTYPES}
_DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
# bfloat16 has no numpy dtype: its weights are viewed as their uint16 bit patterns.
_NUMPY_DTYPES = {code: np.dtype("<u2" if name == "bfloat16" else name).newbyteorder("<")
                 for name, code in DTYPE_CODES.items() if name != "string"}

# Field lists of the tables in modelkit.fbs, in declaration order: field i's vtable entry sits
# at byte 4 + 2*i of the vtable. Kinds: scalars (u8 u16 i32 u32 i64 u64 f64 bool; "?" = optional
# scalar), "str" (UTF-8 string), "[x]" vectors, "[bytes]" (vector of strings kept as bytes), and
# table names. tests/edge_runtime/test_format_schema.py checks this against modelkit.fbs.
_TABLES = {
    "DataRef": (("offset", "u64"), ("length", "u64")),
    "Quantization": (("scale", "Tensor"), ("zero_point", "Tensor"), ("axis", "i32?")),
    "Tensor": (("name", "str"), ("dtype", "u8"), ("shape", "[i64]"), ("dim_params", "[str]"),
               ("unknown_rank", "bool"), ("data", "DataRef"), ("string_data", "[bytes]"),
               ("quantization", "Quantization")),
    "Attribute": (("name", "str"), ("kind", "u8"), ("i", "i64"), ("f", "f64"), ("s", "str"),
                  ("bytes", "[u8]"), ("ints", "[i64]"), ("floats", "[f64]"),
                  ("strings", "[str]"), ("t", "Tensor")),
    "Operator": (("domain", "str"), ("op_type", "str"), ("opset", "i64")),
    "Node": (("operator", "u32"), ("name", "str"), ("inputs", "[i32]"), ("outputs", "[i32]"),
             ("attributes", "[Attribute]"), ("source", "str"), ("module", "str")),
    "MemoryPlan": (("tensors", "[u32]"), ("slots", "[u32]")),
    "Graph": (("name", "str"), ("tensors", "[Tensor]"), ("nodes", "[Node]"), ("inputs", "[u32]"),
              ("outputs", "[u32]"), ("value_info", "[u32]"), ("memory_plan", "MemoryPlan")),
    "OpsetImport": (("domain", "str"), ("version", "i64")),
    "KeyValue": (("key", "str"), ("value", "str")),
    "TestVector": (("inputs", "[Tensor]"), ("outputs", "[Tensor]")),
    "ModelFile": (("format_major", "u16"), ("format_minor", "u16"), ("min_runtime_version", "str"),
                  ("producer", "str"), ("data_offset", "u64"),
                  ("opset_imports", "[OpsetImport]"), ("operators", "[Operator]"),
                  ("graph", "Graph"), ("metadata", "[KeyValue]"),
                  ("test_vectors", "[TestVector]")),
}
_SCALARS = {"u8": "B", "u16": "H", "i32": "i", "u32": "I", "i64": "q", "u64": "Q", "f64": "d",
            "bool": "?"}
_MAX_DEPTH = 8  # ModelFile > Graph > Node > Attribute > Tensor > Quantization > Tensor > DataRef

_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_VTABLE_HEADER = struct.Struct("<HH").unpack_from


def read(source: Union[str, os.PathLike, bytes, bytearray, memoryview]) -> Model:
    """Read a `.mkb` file (a path, or the file's bytes) into a `Model`.

    A path is mapped read-only; weights and test vectors are read-only numpy views on the
    mapping (or on the bytes), never copies. bfloat16 weights come back as uint16 bit patterns,
    string tensors as object arrays of str (bytes for elements that are not UTF-8), as
    `onnx.numpy_helper` gives them.

    Example:
        >>> import numpy as np
        >>> from modelkit.edge_runtime.format import Model, Node, ValueInfo, write
        >>> w = np.ones((2, 2), np.float32)
        >>> m = Model([ValueInfo("x", "float32", (2, 2))], [ValueInfo("y", "float32", (2, 2))],
        ...           [Node("MatMul", ["x", "w"], ["y"])], initializers={"w": w})
        >>> r = read(write(m))
        >>> r.initializers["w"].flags.writeable, r.nodes[0].inputs
        (False, ['x', 'w'])
    """
    buf = _open(source)
    size = len(buf)
    if size < 8:
        raise ModelFormatError(f"file too small: {size} bytes; a .mkb file has at least 8")
    if bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise ModelFormatError(f"not a .mkb file: identifier {bytes(buf[4:8])!r} at bytes 4..8, "
                               f"expected {FILE_IDENTIFIER!r}")
    try:
        header = _Decoder(buf, size).table(_U32(buf, 0)[0], "ModelFile", first_fields=5)
        _check_version(header)
        data_offset = header["data_offset"]
        if data_offset % ALIGNMENT or not 8 <= data_offset <= size:
            raise ModelFormatError(f"data segment offset {data_offset} is not a multiple of "
                                   f"{ALIGNMENT} within the file's {size} bytes")
        root = _Decoder(buf, data_offset).table(_U32(buf, 0)[0], "ModelFile")
        return _ModelBuilder(buf, data_offset).model(root)
    except ModelFormatError:
        raise
    # The checks above are meant to leave nothing for these; should one slip through, the
    # caller still gets the one exception type a bad file may raise.
    except (struct.error, IndexError, KeyError, ValueError, TypeError, OverflowError,
            UnicodeDecodeError, RecursionError, MemoryError) as e:
        raise ModelFormatError(f"malformed .mkb file: {type(e).__name__}: {e}") from e


def _open(source):
    if isinstance(source, bytes):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return memoryview(source).cast("B").toreadonly()
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"read takes a path or bytes, got {type(source).__name__}")
    # NOTE: opening a FIFO blocks until a writer comes, and a device may never end.
    if os.path.exists(source) and not (os.path.isfile(source) or os.path.isdir(source)):
        raise ModelFormatError(f"{os.fspath(source)} is not a regular file; a .mkb model is one")
    with open(source, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        # The mapping outlives the file object; the arrays viewing it keep it alive.
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _check_version(header: dict) -> None:
    major, minor = header["format_major"], header["format_minor"]
    needs = header["min_runtime_version"] or "?"
    if major > FORMAT_VERSION[0]:
        raise ModelFormatError(
            f"file format {major}.{minor} is newer than this reader's {FORMAT_VERSION[0]}.x: "
            f"the file needs modelkit runtime >= {needs}")
    if major < 1:
        raise ModelFormatError(f"file format {major}.{minor} does not exist (the first is 1.0)")
    if _version_tuple(needs) is None:
        raise ModelFormatError(f"min_runtime_version {needs!r} is not a version like '0.1.0'")
    # Only additions of a newer minor version can need a newer runtime; asking for the
    # installed version costs tens of milliseconds of imports, so only those files pay it.
    if minor > FORMAT_VERSION[1] and _version_tuple(needs) > _runtime_version()[0]:
        raise ModelFormatError(f"file format {major}.{minor} needs modelkit runtime >= {needs}; "
                               f"this is {_runtime_version()[1]}")


def _version_tuple(text: str):
    match = re.fullmatch(r"(\d{1,9})\.(\d{1,9})\.(\d{1,9})", text)
    return tuple(int(g) for g in match.groups()) if match else None


@functools.cache
def _runtime_version() -> tuple:
    """(version tuple, version text) of the installed modelkit."""
    import importlib.metadata

    text = importlib.metadata.version("modelkit")
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in match.groups()), text


# ---------------------------------------------------------------------------------------------
# The verifying decoder.


# Field kinds of a compiled plan.
_SCALAR, _TEXT, _TABLE, _SCALAR_VECTOR, _TEXT_VECTOR, _BYTES_VECTOR, _TABLE_VECTOR = range(7)


def _plan(fields) -> tuple:
    """(name, kind, argument, inline size, default) per field, so decoding does no parsing.

    Every non-scalar field is inline a 4-byte offset to its string, vector or table.
    """
    plan = []
    for name, kind in fields:
        base, element = kind.rstrip("?"), kind[1:-1]
        if base in _SCALARS:
            unpack = struct.Struct("<" + _SCALARS[base])
            default = None if kind.endswith("?") else {"bool": False, "f64": 0.0}.get(base, 0)
            plan.append((name, _SCALAR, unpack.unpack_from, unpack.size, default))
        elif kind == "str":
            plan.append((name, _TEXT, None, 4, None))
        elif kind.startswith("[") and element in _SCALARS:
            plan.append((name, _SCALAR_VECTOR, _SCALARS[element], 4, None))
        elif kind.startswith("["):
            vector_kind = {"str": _TEXT_VECTOR, "bytes": _BYTES_VECTOR}.get(element, _TABLE_VECTOR)
            plan.append((name, vector_kind, element, 4, None))
        else:
            plan.append((name, _TABLE, kind, 4, None))
    return tuple(plan)


_PLANS = {name: _plan(fields) for name, fields in _TABLES.items()}
_SLOTS = [struct.Struct(f"<{n}H").unpack_from for n in range(max(map(len, _PLANS.values())) + 1)]


class _Decoder:
    """Decodes tables of `buf[0:end]` into dicts, refusing anything outside that range.

    Offsets in a flatbuffer are unsigned and relative, so every position computed here is >= 0;
    each check is therefore only against `end`.
    """

    def __init__(self, buf, end: int):
        self.buf, self.end, self.budget = buf, end, end
        # The writer stores each distinct string once (names, sources and module paths repeat);
        # a repeated reference returns the same str object.
        self.texts: dict[int, str] = {}

    def fail(self, message: str):
        raise ModelFormatError(f"malformed .mkb flatbuffer: {message}")

    def outside(self, what: str, start: int, stop: int):
        self.fail(f"{what} at bytes [{start}, {stop}) lies outside the flatbuffer [0, {self.end})")

    def spend(self, n: int, what: str) -> None:
        self.budget -= n
        if self.budget < 0:
            self.fail(f"{what}: objects overlap; the file references more data than it holds")

    def table(self, pos: int, type_name: str, depth: int = 0, first_fields: int = None) -> dict:
        buf, end = self.buf, self.end
        if depth > _MAX_DEPTH:
            self.fail(f"{type_name} nested deeper than the schema allows")
        if pos + 4 > end:
            self.outside(f"{type_name} table", pos, pos + 4)
        vtable = pos - _I32(buf, pos)[0]
        if vtable < 0 or vtable + 4 > end:
            self.outside(f"{type_name} vtable", vtable, vtable + 4)
        vtable_size, table_size = _VTABLE_HEADER(buf, vtable)
        if vtable_size < 4 or vtable_size % 2 or table_size < 4:
            self.fail(f"{type_name} vtable at byte {vtable} has sizes {vtable_size}/{table_size}")
        if vtable + vtable_size > end or pos + table_size > end:
            self.outside(f"{type_name} table", pos, pos + table_size)
        self.budget -= table_size
        if self.budget < 0:
            self.spend(0, type_name)
        plan = _PLANS[type_name][:first_fields]
        known = min(len(plan), (vtable_size - 4) // 2)  # newer writers may append fields
        slots = _SLOTS[known](buf, vtable + 4) + (0,) * (len(plan) - known)
        out = {}
        for (name, kind, arg, size, default), slot in zip(plan, slots):
            if not slot:
                out[name] = default
                continue
            if slot + size > table_size:
                self.fail(f"{type_name}.{name} at byte {slot} lies outside its "
                          f"{table_size}-byte table")
            p = pos + slot
            if kind == _SCALAR:
                out[name] = arg(buf, p)[0]
                continue
            p += _U32(buf, p)[0]
            if kind == _TEXT:
                out[name] = self.text(p, type_name, name)
            elif kind == _TABLE:
                out[name] = self.table(p, arg, depth + 1)
            else:
                out[name] = self.vector(p, kind, arg, type_name, name, depth)
        return out

    def raw_string(self, pos: int, type_name: str, name: str):
        """The bytes of the string at `pos`, as a slice of the buffer."""
        buf = self.buf
        if pos + 4 > self.end:
            self.outside(f"{type_name}.{name}", pos, pos + 4)
        n = _U32(buf, pos)[0]
        stop = pos + 4 + n
        if stop >= self.end:
            self.outside(f"{type_name}.{name}", pos, stop + 1)
        if buf[stop]:
            self.fail(f"{type_name}.{name} at byte {pos} lacks its terminating zero byte")
        self.spend(n + 5, f"{type_name}.{name}")
        return buf[pos + 4:stop]

    def text(self, pos: int, type_name: str, name: str) -> str:
        if pos in self.texts:  # its offset was charged with the table or vector holding it
            return self.texts[pos]
        raw = self.raw_string(pos, type_name, name)
        try:
            self.texts[pos] = text = str(raw, "utf-8")
            return text
        except UnicodeDecodeError as e:
            self.fail(f"{type_name}.{name} is not valid UTF-8 "
                      f"({e.reason} at byte {pos + 4 + e.start})")

    def vector(self, pos: int, kind: int, arg, type_name: str, name: str, depth: int):
        buf = self.buf
        if pos + 4 > self.end:
            self.outside(f"{type_name}.{name}", pos, pos + 4)
        n = _U32(buf, pos)[0]
        code, width = (arg, struct.calcsize(arg)) if kind == _SCALAR_VECTOR else ("I", 4)
        start, stop = pos + 4, pos + 4 + n * width
        if stop > self.end:
            self.outside(f"{type_name}.{name} ({n} elements)", pos, stop)
        self.spend(4 + n * width, f"{type_name}.{name}")
        if kind == _SCALAR_VECTOR:
            if code == "B":
                return bytes(buf[start:stop])
            return struct.unpack_from(f"<{n}{code}", buf, start)
        starts = [start + 4 * i + offset
                  for i, offset in enumerate(struct.unpack_from(f"<{n}I", buf, start))]
        if kind == _TEXT_VECTOR:
            return [self.text(p, type_name, name) for p in starts]
        if kind == _BYTES_VECTOR:
            return [bytes(self.raw_string(p, type_name, name)) for p in starts]
        return [self.table(p, arg, depth + 1) for p in starts]


# ---------------------------------------------------------------------------------------------
# From decoded tables to a Model, checking every index, dtype, shape and data range.

_ONNX_DOMAINS = ("", "ai.onnx")
_ATTRIBUTE_FIELDS = {
    fb.AttributeKind.INT: "i", fb.AttributeKind.FLOAT: "f", fb.AttributeKind.STRING: "s",
    fb.AttributeKind.BYTES: "bytes", fb.AttributeKind.INTS: "ints",
    fb.AttributeKind.FLOATS: "floats", fb.AttributeKind.STRINGS: "strings",
    fb.AttributeKind.TENSOR: "t",
}


def opset_for(opsets: dict, domain: str):
    """The opset version `opsets` gives `domain` ("" and "ai.onnx" are one domain), or None.

    Example:
        >>> opset_for({"": 17}, "ai.onnx")
        17
    """
    for alias in _ONNX_DOMAINS if domain in _ONNX_DOMAINS else (domain,):
        if alias in opsets:
            return opsets[alias]
    return None


def _fail(message: str):
    raise ModelFormatError(message)


def _text_or_bytes(raw: bytes):
    # ONNX string elements are bytes, nearly always UTF-8 text; keep real binary intact.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class _ModelBuilder:
    """Turns the decoded root table into a `Model` whose weights view `buf`."""

    def __init__(self, buf, data_offset: int):
        self.buf, self.data_offset, self.file_size = buf, data_offset, len(buf)

    def model(self, root: dict) -> Model:
        graph = root["graph"]
        if graph is None:
            _fail("the file has no graph")
        opsets = self.opsets(root["opset_imports"] or ())
        operators = [self.operator(op, opsets) for op in root["operators"] or ()]
        tensors = graph["tensors"] or ()
        names = [t["name"] for t in tensors]
        if not all(names) or len(set(names)) != len(names):
            _fail(f"tensor names must be non-empty and unique; the file has "
                  f"{sum(not n for n in names)} empty and {len(names) - len(set(names))} repeated")
        for t, name in zip(tensors, names):  # intermediates too, though the Model drops their types
            if t["dtype"]:
                self.dtype(t, f"tensor {name!r}")
            self.shape(t, f"tensor {name!r}")
        infos = {field: [self.value_info(tensors, names, i, label) for i in graph[field] or ()]
                 for field, label in (("inputs", "graph input"), ("outputs", "graph output"),
                                      ("value_info", "value_info"))}
        memory_plan = graph["memory_plan"]
        return Model(
            inputs=infos["inputs"],
            outputs=infos["outputs"],
            nodes=[self.node(n, k, operators, names) for k, n in enumerate(graph["nodes"] or ())],
            initializers={names[i]: self.array(t, f"tensor {names[i]!r}")
                          for i, t in enumerate(tensors)
                          if t["data"] is not None or t["string_data"] is not None},
            value_info=infos["value_info"],
            quantization={names[i]: self.quantization(t, names[i])
                          for i, t in enumerate(tensors) if t["quantization"] is not None},
            opsets=opsets,
            metadata=self.metadata(root["metadata"] or ()),
            producer=root["producer"] or "",
            graph_name=graph["name"] or "",
            memory_plan=None if memory_plan is None else self.memory_plan(memory_plan, names),
            test_vectors=[self.test_vector(v, k, infos)
                          for k, v in enumerate(root["test_vectors"] or ())],
        )

    # -- tensors -----------------------------------------------------------------------------

    def dtype(self, t: dict, what: str) -> str:
        name = _DTYPE_NAMES.get(t["dtype"])
        if name is None:
            _fail(f"{what} has unknown dtype code {t['dtype']} (a newer format minor version "
                  f"than {FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}?)"
                  if t["dtype"] else f"{what} has no dtype")
        return name

    def shape(self, t: dict, what: str):
        dims, params = t["shape"] or (), t["dim_params"]
        if t["unknown_rank"]:
            if dims:
                _fail(f"{what} has unknown rank but {len(dims)} dims")
            return None
        if len(dims) > MAX_RANK:
            _fail(f"{what} has rank {len(dims)}; at most {MAX_RANK} is supported")
        if params is None:
            if dims and min(dims) < 0:
                _fail(f"{what} has shape {dims}; dims must be >= 0 (or -1 with a dim_params name)")
            return dims
        if len(params) != len(dims):
            _fail(f"{what} has {len(dims)} dims but {len(params)} dim_params")
        for i, (d, name) in enumerate(zip(dims, params)):
            if not (d == -1 or (d >= 0 and not name)):
                _fail(f"{what} dim {i} is {d} named {name!r}; expected a size >= 0 without a "
                      "name, or -1 with one")
        return tuple(name if d == -1 else d for d, name in zip(dims, params))

    def value_info(self, tensors, names, index: int, label: str) -> ValueInfo:
        if index >= len(tensors):
            _fail(f"{label} refers to tensor {index}; the graph has {len(tensors)}")
        t, what = tensors[index], f"{label} {names[index]!r}"
        return ValueInfo(names[index], self.dtype(t, what), self.shape(t, what))

    def array(self, t: dict, what: str) -> np.ndarray:
        """The value of tensor `t`: a read-only view of its data, or its strings."""
        dtype, shape = self.dtype(t, what), self.shape(t, what)
        if shape is None or not all(isinstance(d, int) for d in shape):
            _fail(f"{what} has a value but shape {shape}; stored values need fixed shapes")
        count, extent = 1, 1
        for d in shape:
            count *= d
            extent *= max(d, 1)
        if extent > self.file_size:  # even an empty array must stay a sane size for numpy
            _fail(f"{what} has shape {shape}, larger than the whole file")
        data, strings = t["data"], t["string_data"]
        if dtype == "string":
            if data is not None or strings is None or len(strings) != count:
                _fail(f"{what} is a string tensor of shape {shape}: expected {count} string_data "
                      f"entries and no data reference, got "
                      f"{'none' if strings is None else len(strings)} entries"
                      f"{' and a data reference' if data is not None else ''}")
            array = np.empty(count, dtype=object)
            array[:] = [_text_or_bytes(raw) for raw in strings]
            array = array.reshape(shape)
            array.flags.writeable = False
            return array
        if data is None or strings is not None:
            _fail(f"{what} of dtype {dtype} needs a data reference and no string_data")
        np_dtype = _NUMPY_DTYPES[t["dtype"]]
        offset, length = data["offset"], data["length"]
        if length != count * np_dtype.itemsize:
            _fail(f"{what} has shape {shape} and dtype {dtype}, so {count * np_dtype.itemsize} "
                  f"bytes, but its data reference holds {length}")
        if offset % ALIGNMENT or offset < self.data_offset or offset + length > self.file_size:
            _fail(f"{what} data [{offset}, {offset + length}) is not a {ALIGNMENT}-byte aligned "
                  f"range of the data segment [{self.data_offset}, {self.file_size})")
        return np.frombuffer(self.buf, np_dtype, count=count, offset=offset).reshape(shape)

    def quantization(self, t: dict, name: str) -> Quantization:
        q, what = t["quantization"], f"quantization of tensor {name!r}"
        parts = []
        for part in ("scale", "zero_point"):
            p = q[part]
            if p is None or p["quantization"] is not None:
                _fail(f"{what}: {part} must be present and not itself quantized")
            parts.append(self.array(p, f"{what}: {part}"))
            if parts[-1].dtype == object:
                _fail(f"{what}: {part} must be numeric, not strings")
        axis, shape = q["axis"], self.shape(t, f"tensor {name!r}")
        if axis is not None and shape is not None and not -len(shape) <= axis < max(len(shape), 1):
            _fail(f"{what}: axis {axis} is out of range for rank {len(shape)}")
        return Quantization(parts[0], parts[1], axis)

    # -- graph structure ---------------------------------------------------------------------

    def opsets(self, imports) -> dict:
        opsets = {}
        for entry in imports:
            domain, version = entry["domain"] or "", entry["version"]
            if domain in opsets or version < 1:
                _fail(f"opset import of domain {domain!r}: version {version} "
                      f"{'repeated' if domain in opsets else 'is not >= 1'}")
            opsets[domain] = version
        return opsets

    def operator(self, op: dict, opsets: dict) -> tuple:
        domain, op_type, opset = op["domain"] or "", op["op_type"], op["opset"]
        if not op_type:
            _fail(f"an operator of domain {domain!r} has no op_type")
        if opset_for(opsets, domain) != opset:
            _fail(f"operator {domain or 'ai.onnx'}::{op_type} uses opset {opset} but the file "
                  f"imports {opset_for(opsets, domain)} for domain {domain!r}")
        return domain, op_type

    def node(self, n: dict, position: int, operators: list, names: list) -> Node:
        label = f"node {n['name'] or position!r}"
        if n["operator"] >= len(operators):
            _fail(f"{label} uses operator {n['operator']}; the file has {len(operators)}")
        domain, op_type = operators[n["operator"]]
        label = f"{label} ({op_type})"
        edges = []
        for side in ("inputs", "outputs"):
            indices = n[side] or ()
            if indices and (min(indices) < -1 or max(indices) >= len(names)):
                _fail(f"{label} {side} {list(indices)} include an index outside "
                      f"[-1, {len(names)})")
            edges.append([names[i] if i >= 0 else "" for i in indices])
        attrs = {}
        for a in n["attributes"] or ():
            if not a["name"] or a["name"] in attrs:
                _fail(f"{label} has an attribute with an empty or repeated name {a['name']!r}")
            attrs[a["name"]] = self.attribute(a, f"{label} attribute {a['name']!r}")
        return Node(op_type, edges[0], edges[1], attrs, n["name"] or "", domain,
                    n["source"] or "", n["module"] or "")

    def attribute(self, a: dict, what: str):
        field = _ATTRIBUTE_FIELDS.get(a["kind"])
        if field is None:
            _fail(f"{what} has unknown kind {a['kind']}")
        value = a[field]
        if value is None:
            _fail(f"{what} of kind {field} has no value")
        if field == "t":
            return self.array(value, what)
        return list(value) if field in ("ints", "floats") else value

    def metadata(self, entries) -> dict:
        metadata = {}
        for entry in entries:
            key = entry["key"] or ""
            if key in metadata:
                _fail(f"metadata key {key!r} is repeated")
            metadata[key] = entry["value"] or ""
        return metadata

    def memory_plan(self, plan: dict, names: list) -> dict:
        tensors, slots = plan["tensors"] or (), plan["slots"] or ()
        n = len(names)
        if len(tensors) != len(slots) or len(set(tensors)) != len(tensors):
            _fail(f"memory plan has {len(tensors)} tensors ({len(set(tensors))} distinct) "
                  f"for {len(slots)} slots")
        if tensors and (max(tensors) >= n or max(slots) >= n):
            _fail(f"memory plan refers to tensor {max(tensors)} / slot {max(slots)}; both must "
                  f"be below the graph's {n} tensors")
        return {names[t]: s for t, s in zip(tensors, slots)}

    def test_vector(self, vector: dict, position: int, infos: dict) -> TestVector:
        sides = []
        for side in ("inputs", "outputs"):
            allowed = {v.name for v in infos[side]}
            arrays = {}
            for t in vector[side] or ():
                name = t["name"]
                if name not in allowed or name in arrays:
                    _fail(f"test vector {position} {side[:-1]} {name!r} is repeated or not a "
                          f"graph {side[:-1]} (graph {side}: {sorted(allowed)})")
                arrays[name] = self.array(t, f"test vector {position} {side[:-1]} {name!r}")
            sides.append(arrays)
        return TestVector(sides[0], sides[1])
