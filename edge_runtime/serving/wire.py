"""The pipe protocol between the server and its worker processes: one frame per message, a JSON
header plus the raw bytes of its arrays (no pickle: a worker only ever decodes JSON and numpy
buffers).

Frame: `<u64 blob length><u32 header length><header JSON><blob>`. The header's `tensors` lists
`[dtype, shape, offset, nbytes]` per array, in order; string arrays travel in the header itself.

Example:
    >>> import numpy as np
    >>> frame = encode({"job": 1}, [np.arange(3, dtype=np.float32)])
    >>> header, arrays = decode_body(frame[PREFIX.size:], *PREFIX.unpack(frame[:PREFIX.size]))
    >>> header["job"], arrays[0].tolist()
    (1, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import json
import struct

import numpy as np

PREFIX = struct.Struct("<QI")


def encode(header: dict, arrays: list) -> bytes:
    """One frame holding `header` (JSON-able) and `arrays` (numpy, any dtype the runtime knows).

    Example: see the module docstring.
    """
    tensors, chunks, offset = [], [], 0
    for array in arrays:
        array = np.asarray(array)
        if array.dtype.kind in "OUS":
            tensors.append(["string", list(array.shape), [str(v) for v in array.ravel().tolist()]])
            continue
        data = np.ascontiguousarray(array).tobytes()
        tensors.append([array.dtype.name, list(array.shape), offset, len(data)])
        chunks.append(data)
        offset += len(data)
    head = json.dumps({**header, "tensors": tensors}, separators=(",", ":")).encode()
    return PREFIX.pack(offset, len(head)) + head + b"".join(chunks)


def decode_body(body: bytes, blob_length: int, header_length: int) -> tuple[dict, list]:
    """Split a frame's body (what follows the prefix) back into its header and arrays; the
    arrays are read-only views on `body`.

    Example: see the module docstring.
    """
    if len(body) != blob_length + header_length:
        raise ValueError(f"frame body is {len(body)} bytes, expected {blob_length + header_length}")
    header = json.loads(body[:header_length])
    blob = memoryview(body)[header_length:]
    arrays = []
    for tensor in header.pop("tensors"):
        if tensor[0] == "string":
            arrays.append(np.array(tensor[2], dtype=object).reshape(tensor[1]))
            continue
        dtype, shape, offset, nbytes = tensor
        arrays.append(np.frombuffer(blob[offset:offset + nbytes], dtype=dtype).reshape(shape))
    return header, arrays


def read_frame(stream) -> tuple[dict, list] | None:
    """Read one frame from a binary file object (blocking); None at a clean end of stream.

    Example:
        >>> import io
        >>> read_frame(io.BytesIO(encode({"job": 7}, [])))[0]
        {'job': 7}
    """
    prefix = stream.read(PREFIX.size)
    if not prefix:
        return None
    if len(prefix) != PREFIX.size:
        raise EOFError("the stream ended inside a frame prefix")
    blob_length, header_length = PREFIX.unpack(prefix)
    body = stream.read(blob_length + header_length)
    if len(body) != blob_length + header_length:
        raise EOFError("the stream ended inside a frame")
    return decode_body(body, blob_length, header_length)
