"""`read` refuses malformed, truncated, hostile and too-new files with `ModelFormatError` only."""

import contextlib
import signal
import struct

import flatbuffers
import numpy as np
import pytest

from modelkit.edge_runtime.errors import ModelFormatError
from modelkit.edge_runtime.format import Model, read, write
from modelkit.edge_runtime.format import modelkit_generated as fb
from modelkit.edge_runtime.format import writer
from test_format import rich_model


@pytest.fixture(scope="module")
def data() -> bytes:
    return write(rich_model())


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging when the body runs longer than `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: read() must never hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def patched(data: bytes, pos: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def field(obj, vtable_offset: int) -> int:
    """Absolute position of a present field of a generated-code object."""
    offset = obj._tab.Offset(vtable_offset)
    assert offset, "field absent"
    return obj._tab.Pos + offset


def vector(obj, vtable_offset: int) -> int:
    """Absolute position of the first element of a present vector field."""
    return obj._tab.Vector(obj._tab.Offset(vtable_offset))


def graph_tensor(data: bytes, name: str):
    graph = fb.ModelFile.GetRootAs(data, 0).Graph()
    return next(graph.Tensors(i) for i in range(graph.TensorsLength())
                if graph.Tensors(i).Name() == name.encode())


def test_too_small_files(tmp_path):
    for raw in (b"", b"MKB1", b"\x00" * 7):
        with pytest.raises(ModelFormatError, match=f"file too small: {len(raw)} bytes"):
            read(raw)
    (tmp_path / "empty.mkb").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="file too small: 0 bytes"):
        read(tmp_path / "empty.mkb")


def test_wrong_identifier(data):
    with pytest.raises(ModelFormatError,
                       match=r"identifier b'ONNX' at bytes 4..8, expected b'MKB1'"):
        read(data[:4] + b"ONNX" + data[8:])


def test_newer_major_version_names_the_runtime_it_needs(monkeypatch):
    monkeypatch.setattr(writer, "FORMAT_VERSION", (2, 3))
    monkeypatch.setattr(writer, "MIN_RUNTIME_VERSION", "9.1.0")
    with pytest.raises(ModelFormatError, match=r"file format 2\.3 is newer than this reader's "
                                               r"1\.x: the file needs modelkit runtime >= 9\.1\.0"):
        read(write(rich_model()))


def test_newer_minor_version_needing_a_newer_runtime_is_refused(monkeypatch):
    monkeypatch.setattr(writer, "FORMAT_VERSION", (1, 7))
    monkeypatch.setattr(writer, "MIN_RUNTIME_VERSION", "99.0.0")
    with pytest.raises(ModelFormatError, match=r"file format 1\.7 needs modelkit runtime >= "
                                               r"99\.0\.0; this is 0\."):
        read(write(rich_model()))


def test_malformed_min_runtime_version_is_refused(monkeypatch):
    monkeypatch.setattr(writer, "MIN_RUNTIME_VERSION", "soon")
    with pytest.raises(ModelFormatError, match="min_runtime_version 'soon' is not a version"):
        read(write(rich_model()))


def test_newer_minor_version_with_unknown_fields_still_loads(monkeypatch, data):
    # A 1.1 writer appends a field to ModelFile; a 1.0 reader ignores it.
    end = fb.ModelFileEnd
    monkeypatch.setattr(fb, "ModelFileStart", lambda b: b.StartObject(11))
    monkeypatch.setattr(fb, "ModelFileEnd", lambda b: (b.PrependInt64Slot(10, 42, 0), end(b))[1])
    monkeypatch.setattr(writer, "FORMAT_VERSION", (1, 1))
    newer = write(rich_model())
    assert newer != data
    model = read(newer)
    assert model.graph_name == "rich" and len(model.nodes) == 4


def _conv_w_data(data):
    return graph_tensor(data, "conv_w").Data()


@pytest.mark.parametrize("locate, fmt, value, message", [
    (lambda d: field(_conv_w_data(d), 4), "<Q", 2 ** 40, "aligned range of the data segment"),
    (lambda d: field(_conv_w_data(d), 4), "<Q", 2 ** 64 - 64, "aligned range of the data segment"),
    (lambda d: field(_conv_w_data(d), 4), "<Q", 0, "aligned range of the data segment"),
    (lambda d: field(_conv_w_data(d), 4), "<Q", 64 * 3 + 8, "aligned range"),
    (lambda d: field(_conv_w_data(d), 6), "<Q", 2 ** 63, "its data reference holds"),
    (lambda d: vector(graph_tensor(d, "conv_w"), 8), "<q", 5, "its data reference holds"),
    (lambda d: vector(graph_tensor(d, "conv_w"), 8), "<q", 2 ** 40, "larger than the whole file"),
    (lambda d: vector(graph_tensor(d, "empty"), 8) + 8, "<q", 2 ** 62, "larger than the whole"),
    (lambda d: vector(graph_tensor(d, "conv_w"), 8), "<q", -5, "dims must be >= 0"),
    (lambda d: vector(graph_tensor(d, "x"), 8) + 8, "<q", -7, "'x' dim 1 is -7"),
    (lambda d: field(graph_tensor(d, "conv_w"), 6), "<B", 99, "unknown dtype code 99"),
    (lambda d: field(graph_tensor(d, "x"), 6), "<B", 0, "graph input 'x' has no dtype"),
    (lambda d: vector(graph_tensor(d, "conv_w"), 8) - 4, "<I", 2 ** 31, "outside the flatbuffer"),
    (lambda d: vector(fb.ModelFile.GetRootAs(d, 0).Graph(), 6) - 4, "<I", 2 ** 32 - 1,
     "outside the flatbuffer"),
    (lambda d: vector(fb.ModelFile.GetRootAs(d, 0).Graph().Nodes(0), 8), "<i", 999,
     "include an index outside"),
    (lambda d: vector(fb.ModelFile.GetRootAs(d, 0).Graph().Nodes(0), 8), "<i", -2,
     "include an index outside"),
    (lambda d: field(fb.ModelFile.GetRootAs(d, 0).Graph().Nodes(0), 4), "<I", 77,
     "uses operator 77"),
    (lambda d: vector(fb.ModelFile.GetRootAs(d, 0).Graph(), 10), "<I", 10 ** 6,
     "graph input refers to tensor 1000000"),
    (lambda d: field(fb.ModelFile.GetRootAs(d, 0), 12), "<Q", 100, "not a multiple of 64"),
    (lambda d: field(fb.ModelFile.GetRootAs(d, 0), 12), "<Q", 2 ** 50, "not a multiple of 64"),
    (lambda d: field(fb.ModelFile.GetRootAs(d, 0), 12), "<Q", 64, "outside the flatbuffer"),
    (lambda d: field(fb.ModelFile.GetRootAs(d, 0), 4), "<H", 0, "format 0.0 does not exist"),
    (lambda d: 0, "<I", 2 ** 32 - 4, "outside the flatbuffer"),
    (lambda d: vector(fb.ModelFile.GetRootAs(d, 0), 14), "<I", 2 ** 31, "outside the flatbuffer"),
])
def test_hostile_fields_are_refused_with_a_specific_message(data, locate, fmt, value, message):
    with pytest.raises(ModelFormatError, match=message):
        read(patched(data, locate(data), fmt, value))


def test_invalid_utf8_in_a_name_is_refused(data):
    pos = data.find(b"conv_w\x00")
    with pytest.raises(ModelFormatError, match="not valid UTF-8"):
        read(data[:pos] + b"\xff" + data[pos + 1:])


def test_shared_references_cannot_multiply_work():
    # 20,000 metadata entries all pointing at one entry with a 4 KB key: 80 KB of file that a
    # naive decoder would expand into 80 MB of strings.
    b = flatbuffers.Builder(0)
    key, value = b.CreateString("k" * 4096), b.CreateString("v")
    fb.KeyValueStart(b)
    fb.KeyValueAddKey(b, key)
    fb.KeyValueAddValue(b, value)
    entry = fb.KeyValueEnd(b)
    fb.ModelFileStartMetadataVector(b, 20_000)
    for _ in range(20_000):
        b.PrependUOffsetTRelative(entry)
    metadata = b.EndVector()
    fb.GraphStart(b)
    graph = fb.GraphEnd(b)
    version = b.CreateString("0.1.0")
    fb.ModelFileStart(b)
    fb.ModelFileAddFormatMajor(b, 1)
    fb.ModelFileAddMinRuntimeVersion(b, version)
    fb.ModelFileAddDataOffset(b, 1)  # patched below, once the size is known
    fb.ModelFileAddGraph(b, graph)
    fb.ModelFileAddMetadata(b, metadata)
    b.Finish(fb.ModelFileEnd(b), file_identifier=b"MKB1")
    raw = bytes(b.Output())
    raw += bytes(-len(raw) % 64)
    hostile = patched(raw, field(fb.ModelFile.GetRootAs(raw, 0), 12), "<Q", len(raw))
    with deadline(10), pytest.raises(ModelFormatError, match="objects overlap"):
        read(hostile)


def test_truncated_files_are_refused(data):
    positions = np.unique(np.linspace(0, len(data) - 1, 200).astype(int))
    assert len(positions) == 200
    with deadline(30):
        for n in positions:
            with pytest.raises(ModelFormatError):
                read(data[:n])


def test_random_byte_flips_give_a_model_or_model_format_error(data):
    rng = np.random.default_rng(1234)
    flatbuffer_end = fb.ModelFile.GetRootAs(data, 0).DataOffset()
    outcomes = {"refused": 0, "loaded": 0}
    with deadline(60):
        for _ in range(1000):
            corrupt = bytearray(data)
            for pos in rng.integers(0, flatbuffer_end, size=rng.integers(1, 5)):
                corrupt[pos] = rng.integers(0, 256)
            try:
                model = read(bytes(corrupt))
            except ModelFormatError:
                outcomes["refused"] += 1
            else:
                assert isinstance(model, Model)
                outcomes["loaded"] += 1
    assert outcomes["refused"] > 20 and outcomes["loaded"] > 20, outcomes  # both paths exercised
