"""Serialise a `Model` into a `.mkb` file: the flatbuffer of `modelkit.fbs`, then the weights.

The output is a pure function of the model: no timestamps, and every table whose order carries
no meaning (tensors, operators, opsets, metadata, attributes, test vector entries) is sorted, so
identical models give byte-identical files.

Example:
    >>> import numpy as np
    >>> from modelkit.edge_runtime.format import Model, Node, ValueInfo, read, write
    >>> m = Model(inputs=[ValueInfo("x", "float32", ("batch", 3))],
    ...           outputs=[ValueInfo("y", "float32", ("batch", 3))],
    ...           nodes=[Node("Add", ["x", "b"], ["y"])],
    ...           initializers={"b": np.arange(3, dtype=np.float32)})
    >>> data = write(m)
    >>> data[4:8], read(data).initializers["b"]
    (b'MKB1', array([0., 1., 2.], dtype=float32))
"""

from __future__ import annotations

import os
from typing import Optional

import flatbuffers
import numpy as np

from modelkit.edge_runtime.atomic_file import write_atomically
from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format import modelkit_generated as fb
from modelkit.edge_runtime.format.model import DTYPES, Model, Quantization, ValueInfo
from modelkit.edge_runtime.format.reader import (
    ALIGNMENT, DTYPE_CODES, FILE_IDENTIFIER, FORMAT_VERSION, MIN_RUNTIME_VERSION, opset_for,
)

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def write(model: Model, path: Optional[str | os.PathLike] = None) -> Optional[bytes]:
    """Serialise `model`; return the file's bytes, or write them atomically to `path`.

    Weights are stored little-endian in C order, each 64-byte aligned. String tensors are
    stored as their UTF-8 (or raw bytes) elements. A bfloat16 tensor is a uint16 array whose
    ValueInfo says "bfloat16". Raises `ModelFormatError` for a model the format cannot hold.

    Example:
        >>> from modelkit.edge_runtime.format import Model, Node, ValueInfo
        >>> m = Model([ValueInfo("x", "float32", (2,))], [ValueInfo("y", "float32", (2,))],
        ...           [Node("Relu", ["x"], ["y"])])
        >>> write(m) == write(m)
        True
    """
    tensors = _TensorTable(model)
    # Offsets are absolute, so the data segment start must be known before the flatbuffer is
    # built. Build once with a guess; the size does not depend on offset values once all of them
    # are non-zero (zero is the default, which flatbuffers omits), so a second build with the
    # measured start always fits.
    data_offset = ALIGNMENT
    while True:
        builder = _Builder(tensors, data_offset)
        flatbuffer = builder.build(model)
        if len(flatbuffer) <= data_offset:
            break
        data_offset = _align(len(flatbuffer))
    chunks = [flatbuffer, bytes(data_offset - len(flatbuffer))]
    position = data_offset
    for offset, blob in builder.blobs:
        chunks.append(bytes(offset - position))
        chunks.append(blob)
        position = offset + blob.nbytes
    if path is None:
        return b"".join(chunks)
    write_atomically(path, chunks)
    return None


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _fail(message: str):
    raise ModelFormatError(f"cannot write .mkb: {message}")


# ---------------------------------------------------------------------------------------------
# The tensor table: every named value of the graph, sorted by name, with its declared type.


class _TensorTable:
    """Names, declared types, weights and quantization of every tensor, checked for consistency."""

    def __init__(self, model: Model):
        declared: dict[str, ValueInfo] = {}
        for what, infos in (("input", model.inputs), ("output", model.outputs),
                            ("value_info", model.value_info)):
            for info in infos:
                _check_name(info.name, f"graph {what}")
                if info.dtype not in DTYPES:
                    _fail(f"{what} {info.name!r} has dtype {info.dtype!r}; "
                          f"expected one of {DTYPES}")
                if declared.setdefault(info.name, info) != info:
                    _fail(f"{info.name!r} is declared twice with different types: "
                          f"{declared[info.name]} and {info}")
        self.declared = declared
        names = set(declared) | set(model.initializers) | set(model.quantization)
        names |= set(model.memory_plan or ())
        for node in model.nodes:
            names.update(n for n in node.inputs if n)
            names.update(n for n in node.outputs if n)
        for name in names:
            _check_name(name, "tensor")
        self.names = sorted(names)
        self.index = {name: i for i, name in enumerate(self.names)}

    def dtype_and_shape(self, name: str, array: Optional[np.ndarray]):
        """The (dtype name, shape) the file records for `name`; shape None: unknown rank."""
        info = self.declared.get(name)
        if array is None:
            return (info.dtype, info.shape) if info else (None, None)
        dtype = _array_dtype(array, f"initializer {name!r}")
        if info is None:
            return dtype, array.shape
        if not (info.dtype == dtype or (info.dtype == "bfloat16" and array.dtype == np.uint16)):
            _fail(f"initializer {name!r} is {dtype} but its ValueInfo says {info.dtype}")
        if info.shape != array.shape:
            _fail(f"initializer {name!r} has shape {array.shape} but its ValueInfo says "
                  f"{info.shape}")
        return info.dtype, array.shape


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        _fail(f"{what} must be a str, got {value!r}")
    return value


def _check_name(name, what: str) -> None:
    if not isinstance(name, str) or not name:
        _fail(f"{what} names must be non-empty strings, got {name!r}")


def _array_dtype(array, what: str) -> str:
    if not isinstance(array, np.ndarray):
        _fail(f"{what} must be a numpy array, got {type(array).__name__}")
    if array.dtype.kind in "USO":
        return "string"
    if array.dtype.name not in DTYPE_CODES:
        _fail(f"{what} has dtype {array.dtype}; expected one of {DTYPES}")
    return array.dtype.name


# ---------------------------------------------------------------------------------------------
# Building the flatbuffer with the generated code.


class _Builder:
    """One build of the flatbuffer; `blobs` collects (absolute offset, bytes) of the weights."""

    def __init__(self, tensors: _TensorTable, data_offset: int):
        self.b = flatbuffers.Builder(1024)
        self.tensors = tensors
        self.data_offset = data_offset
        self.blobs: list[tuple[int, memoryview]] = []
        self.next_offset = data_offset

    def build(self, model: Model) -> bytes:
        b = self.b
        operators = sorted({(node.domain, node.op_type) for node in model.nodes})
        opsets = {domain: _opset(model.opsets, domain) for domain, _ in operators}
        graph = self.graph(model, {op: i for i, op in enumerate(operators)})
        test_vectors = [self.test_vector(model, tv, i) for i, tv in enumerate(model.test_vectors)]
        operator_offsets = [self.operator(d, t, opsets[d]) for d, t in operators]
        opset_offsets = [self.opset_import(d, v) for d, v in sorted(model.opsets.items())]
        metadata = [self.key_value(k, v) for k, v in sorted(model.metadata.items())]
        min_runtime = b.CreateSharedString(MIN_RUNTIME_VERSION)
        producer = b.CreateSharedString(_text(model.producer, "producer"))
        opset_vector = self.table_vector(fb.ModelFileStartOpsetImportsVector, opset_offsets)
        operator_vector = self.table_vector(fb.ModelFileStartOperatorsVector, operator_offsets)
        metadata_vector = self.table_vector(fb.ModelFileStartMetadataVector, metadata)
        test_vector_vector = (self.table_vector(fb.ModelFileStartTestVectorsVector, test_vectors)
                              if test_vectors else None)
        fb.ModelFileStart(b)
        fb.ModelFileAddFormatMajor(b, FORMAT_VERSION[0])
        fb.ModelFileAddFormatMinor(b, FORMAT_VERSION[1])
        fb.ModelFileAddMinRuntimeVersion(b, min_runtime)
        fb.ModelFileAddProducer(b, producer)
        fb.ModelFileAddDataOffset(b, self.data_offset)
        fb.ModelFileAddOpsetImports(b, opset_vector)
        fb.ModelFileAddOperators(b, operator_vector)
        fb.ModelFileAddGraph(b, graph)
        fb.ModelFileAddMetadata(b, metadata_vector)
        if test_vector_vector is not None:
            fb.ModelFileAddTestVectors(b, test_vector_vector)
        b.Finish(fb.ModelFileEnd(b), file_identifier=FILE_IDENTIFIER)
        return bytes(b.Output())

    # -- helpers over the builder ------------------------------------------------------------

    def table_vector(self, start, offsets: list[int]) -> int:
        start(self.b, len(offsets))
        for offset in reversed(offsets):
            self.b.PrependUOffsetTRelative(offset)
        return self.b.EndVector()

    def string_vector(self, start, strings) -> int:
        return self.table_vector(start, [self.b.CreateSharedString(s) for s in strings])

    def numbers(self, values, dtype: str) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1))

    def add_data(self, array: np.ndarray) -> int:
        """Place `array` in the data segment; return its DataRef."""
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        offset = self.next_offset
        self.blobs.append((offset, memoryview(little.reshape(-1).view(np.uint8))))
        self.next_offset = _align(offset + little.nbytes)
        fb.DataRefStart(self.b)
        fb.DataRefAddOffset(self.b, offset)
        fb.DataRefAddLength(self.b, little.nbytes)
        return fb.DataRefEnd(self.b)

    # -- tables ------------------------------------------------------------------------------

    def graph(self, model: Model, operators: dict) -> int:
        b, index = self.b, self.tensors.index
        tensors = [self.graph_tensor(model, name) for name in self.tensors.names]
        nodes = [self.node(node, operators, i) for i, node in enumerate(model.nodes)]
        plan = self.memory_plan(model.memory_plan) if model.memory_plan is not None else None
        name = b.CreateSharedString(_text(model.graph_name, "graph_name"))
        tensor_vector = self.table_vector(fb.GraphStartTensorsVector, tensors)
        node_vector = self.table_vector(fb.GraphStartNodesVector, nodes)
        inputs = self.numbers([index[v.name] for v in model.inputs], "<u4")
        outputs = self.numbers([index[v.name] for v in model.outputs], "<u4")
        value_info = self.numbers([index[v.name] for v in model.value_info], "<u4")
        fb.GraphStart(b)
        fb.GraphAddName(b, name)
        fb.GraphAddTensors(b, tensor_vector)
        fb.GraphAddNodes(b, node_vector)
        fb.GraphAddInputs(b, inputs)
        fb.GraphAddOutputs(b, outputs)
        fb.GraphAddValueInfo(b, value_info)
        if plan is not None:
            fb.GraphAddMemoryPlan(b, plan)
        return fb.GraphEnd(b)

    def graph_tensor(self, model: Model, name: str) -> int:
        array = model.initializers.get(name)
        dtype, shape = self.tensors.dtype_and_shape(name, array)
        quantization = model.quantization.get(name)
        return self.tensor(name, dtype, shape, array, quantization)

    def tensor(self, name: str, dtype: Optional[str], shape, array=None,
               quantization: Optional[Quantization] = None) -> int:
        """A Tensor table; `dtype` None: undeclared; `shape` None: unknown rank."""
        b = self.b
        name_offset = b.CreateSharedString(name)
        dims = [-1 if isinstance(d, str) else _int(d, f"tensor {name!r} dim", 0)
                for d in shape or ()]
        shape_offset = self.numbers(dims, "<i8")
        dim_params = (self.string_vector(fb.TensorStartDimParamsVector,
                                         [d if isinstance(d, str) else "" for d in shape])
                      if -1 in dims else None)
        data = strings = None
        if array is not None and dtype == "string":
            strings = self.string_vector(fb.TensorStartStringDataVector,
                                         [_string_element(s, name) for s in array.reshape(-1)])
        elif array is not None:
            data = self.add_data(array)
        quant = self.quantization(name, quantization) if quantization is not None else None
        fb.TensorStart(b)
        fb.TensorAddName(b, name_offset)
        fb.TensorAddDtype(b, DTYPE_CODES[dtype] if dtype else fb.DType.UNDEFINED)
        fb.TensorAddShape(b, shape_offset)
        if dim_params is not None:
            fb.TensorAddDimParams(b, dim_params)
        fb.TensorAddUnknownRank(b, shape is None)
        if data is not None:
            fb.TensorAddData(b, data)
        if strings is not None:
            fb.TensorAddStringData(b, strings)
        if quant is not None:
            fb.TensorAddQuantization(b, quant)
        return fb.TensorEnd(b)

    def array_tensor(self, name: str, array, what: str) -> int:
        return self.tensor(name, _array_dtype(array, what), array.shape, array)

    def quantization(self, name: str, q: Quantization) -> int:
        what = f"quantization of {name!r}"
        for part in (q.scale, q.zero_point):
            if _array_dtype(part, what) == "string":
                _fail(f"{what} must be numeric, got dtype {part.dtype}")
        scale = self.array_tensor("", q.scale, f"{what}: scale")
        zero_point = self.array_tensor("", q.zero_point, f"{what}: zero_point")
        fb.QuantizationStart(self.b)
        fb.QuantizationAddScale(self.b, scale)
        fb.QuantizationAddZeroPoint(self.b, zero_point)
        if q.axis is not None:
            fb.QuantizationAddAxis(self.b, _int(q.axis, f"{what}: axis", -(2 ** 31), 2 ** 31 - 1))
        return fb.QuantizationEnd(self.b)

    def node(self, node, operators: dict, position: int) -> int:
        b, index = self.b, self.tensors.index
        label = f"node {node.name or position!r} ({node.op_type})"
        attributes = [self.attribute(k, v, label) for k, v in sorted(node.attrs.items())]
        name = b.CreateSharedString(_text(node.name, f"{label} name"))
        inputs = self.numbers([index[n] if n else -1 for n in node.inputs], "<i4")
        outputs = self.numbers([index[n] if n else -1 for n in node.outputs], "<i4")
        attribute_vector = self.table_vector(fb.NodeStartAttributesVector, attributes)
        source = b.CreateSharedString(_text(node.source, f"{label} source"))
        module = b.CreateSharedString(_text(node.module, f"{label} module"))
        fb.NodeStart(b)
        fb.NodeAddOperator(b, operators[(node.domain, node.op_type)])
        fb.NodeAddName(b, name)
        fb.NodeAddInputs(b, inputs)
        fb.NodeAddOutputs(b, outputs)
        fb.NodeAddAttributes(b, attribute_vector)
        fb.NodeAddSource(b, source)
        fb.NodeAddModule(b, module)
        return fb.NodeEnd(b)

    def attribute(self, name: str, value, label: str) -> int:
        b, kinds = self.b, fb.AttributeKind
        what = f"{label} attribute {name!r}"
        _check_name(name, f"{label} attribute")
        name_offset = b.CreateSharedString(name)
        kind, add = _attribute_kind(value, what)
        if kind == kinds.INT:
            field = _int(value, what)
        elif kind == kinds.FLOAT:
            field = float(value)
        elif kind in (kinds.STRING, kinds.BYTES):
            field = b.CreateString(value) if kind == kinds.STRING else b.CreateByteVector(value)
        elif kind == kinds.INTS:
            field = self.numbers([_int(v, what) for v in value], "<i8")
        elif kind == kinds.FLOATS:
            field = self.numbers(value, "<f8")
        elif kind == kinds.STRINGS:
            field = self.string_vector(fb.AttributeStartStringsVector, value)
        else:
            field = self.array_tensor("", value, what)
        fb.AttributeStart(b)
        fb.AttributeAddName(b, name_offset)
        fb.AttributeAddKind(b, kind)
        add(b, field)
        return fb.AttributeEnd(b)

    def operator(self, domain: str, op_type: str, opset: int) -> int:
        b = self.b
        _check_name(op_type, f"op_type of domain {domain!r}")
        domain_offset = b.CreateSharedString(_text(domain, f"domain of op {op_type!r}"))
        op_type_offset = b.CreateSharedString(op_type)
        fb.OperatorStart(b)
        fb.OperatorAddDomain(b, domain_offset)
        fb.OperatorAddOpType(b, op_type_offset)
        fb.OperatorAddOpset(b, opset)
        return fb.OperatorEnd(b)

    def opset_import(self, domain: str, version) -> int:
        domain_offset = self.b.CreateSharedString(_text(domain, "opset domain"))
        fb.OpsetImportStart(self.b)
        fb.OpsetImportAddDomain(self.b, domain_offset)
        fb.OpsetImportAddVersion(self.b, _int(version, f"opset of domain {domain!r}"))
        return fb.OpsetImportEnd(self.b)

    def key_value(self, key: str, value: str) -> int:
        key_offset = self.b.CreateSharedString(_text(key, "metadata key"))
        value_offset = self.b.CreateSharedString(_text(value, f"metadata {key!r}"))
        fb.KeyValueStart(self.b)
        fb.KeyValueAddKey(self.b, key_offset)
        fb.KeyValueAddValue(self.b, value_offset)
        return fb.KeyValueEnd(self.b)

    def memory_plan(self, plan: dict) -> int:
        index, limit = self.tensors.index, len(self.tensors.names) - 1
        entries = sorted((index[name], _int(slot, f"memory plan slot of {name!r}", 0, limit))
                         for name, slot in plan.items())
        tensors = self.numbers([t for t, _ in entries], "<u4")
        slots = self.numbers([s for _, s in entries], "<u4")
        fb.MemoryPlanStart(self.b)
        fb.MemoryPlanAddTensors(self.b, tensors)
        fb.MemoryPlanAddSlots(self.b, slots)
        return fb.MemoryPlanEnd(self.b)

    def test_vector(self, model: Model, vector, position: int) -> int:
        sides = []
        for side, arrays, allowed in (("input", vector.inputs, model.inputs),
                                      ("output", vector.outputs, model.outputs)):
            names = {v.name for v in allowed}
            for name in arrays:
                if name not in names:
                    _fail(f"test vector {position} has {side} {name!r}, which is not a graph "
                          f"{side}; graph {side}s: {sorted(names)}")
            sides.append([self.array_tensor(name, arrays[name],
                                            f"test vector {position} {side} {name!r}")
                          for name in sorted(arrays)])
        inputs = self.table_vector(fb.TestVectorStartInputsVector, sides[0])
        outputs = self.table_vector(fb.TestVectorStartOutputsVector, sides[1])
        fb.TestVectorStart(self.b)
        fb.TestVectorAddInputs(self.b, inputs)
        fb.TestVectorAddOutputs(self.b, outputs)
        return fb.TestVectorEnd(self.b)


def _opset(opsets: dict, domain: str) -> int:
    version = opset_for(opsets, domain)
    if version is None:
        _fail(f"nodes use domain {domain!r} but model.opsets has no version for it: {opsets}")
    return version


def _int(value, what: str, low: int = _INT64_MIN, high: int = _INT64_MAX) -> int:
    if not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        _fail(f"{what} is {value!r}; expected an int in [{low}, {high}]")
    return int(value)


def _string_element(s, name: str):
    if not isinstance(s, (str, bytes)):
        _fail(f"string tensor {name!r} holds {type(s).__name__}; expected str or bytes elements")
    return s


def _attribute_kind(value, what: str):
    """(AttributeKind, the generated Add function for its value field) of a Python value."""
    kinds = fb.AttributeKind
    if isinstance(value, (int, np.integer)):  # bool included: ONNX has no bool attributes
        return kinds.INT, fb.AttributeAddI
    if isinstance(value, (float, np.floating)):
        return kinds.FLOAT, fb.AttributeAddF
    if isinstance(value, str):
        return kinds.STRING, fb.AttributeAddS
    if isinstance(value, bytes):
        return kinds.BYTES, fb.AttributeAddBytes
    if isinstance(value, np.ndarray):
        return kinds.TENSOR, fb.AttributeAddT
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, np.integer)) for v in value):
            return kinds.INTS, fb.AttributeAddInts
        if all(isinstance(v, (int, float, np.integer, np.floating)) for v in value):
            return kinds.FLOATS, fb.AttributeAddFloats
        if all(isinstance(v, str) for v in value):
            return kinds.STRINGS, fb.AttributeAddStrings
    _fail(f"{what} is {value!r}; supported: int, float, str, bytes, lists of int/float/str, "
          "numpy arrays")
