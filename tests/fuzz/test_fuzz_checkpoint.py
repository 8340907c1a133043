"""Fuzz target: `mk.load` on safetensors checkpoints, and the atomic writes of every writer.

A real checkpoint (a small mk.nn model's state_dict) is truncated, has bytes flipped, and has its
JSON header rewritten with hostile dtypes, shapes and data offsets. `mk.load` must return the
tensors or raise `CheckpointError` naming the file: nothing else, within a wall-clock limit.
Loaded tensors must have exactly the bytes their header declares.

The writers (`mk.save`, `.mkb` and `.onnx` export, `modelkit convert`) are made to fail halfway
through writing: the previous file must be intact and no temporary file left behind.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fuzz_settings import fuzz, wall_clock_limit

import modelkit.authoring as mk
from modelkit.authoring.errors import CheckpointError
from modelkit.edge_runtime import atomic_file
from modelkit.edge_runtime.atomic_file import write_atomically

CASE_SECONDS = 5


def _checkpoint_bytes(tmp_path) -> bytes:
    mk.manual_seed(0)
    net = mk.nn.Sequential(mk.nn.Linear(4, 3), mk.nn.BatchNorm1d(3))
    path = tmp_path / "net.safetensors"
    mk.save(net.state_dict(), path)
    return path.read_bytes()


def load_guarded(path):
    with wall_clock_limit(CASE_SECONDS):
        try:
            return mk.load(path)
        except CheckpointError as refusal:
            assert str(path) in str(refusal)
            return refusal


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _checkpoint_bytes(tmp_path_factory.mktemp("ckpt"))


def _header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack_from("<Q", data)[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@fuzz(200)
@given(st.data())
def test_truncated_and_flipped_checkpoints_load_or_raise_checkpoint_error(tmp_path_factory,
                                                                          checkpoint, data):
    blob = bytearray(checkpoint)
    for _ in range(data.draw(st.integers(0, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob) - 1)):]
    path = tmp_path_factory.mktemp("c") / "mutated.safetensors"
    path.write_bytes(bytes(blob))
    load_guarded(path)


HOSTILE_DIMS = st.sampled_from([-1, 0, 2 ** 31, 2 ** 62, 2 ** 64 + 1]) | st.integers(0, 50)
HOSTILE_OFFSETS = st.sampled_from([-1, 0, 2 ** 63, 2 ** 64 + 5]) | st.integers(0, 400)


@fuzz(200)
@given(st.data())
def test_hostile_headers_load_or_raise_checkpoint_error(tmp_path_factory, checkpoint, data):
    header, body = _header(checkpoint)
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop", "metadata"]))
    if field == "dtype":
        entry["dtype"] = data.draw(st.sampled_from(["F32", "F64", "I8", "BOOL", "BF16", "F8_E4M3",
                                                    "C64", "X", "", "object"]))
    elif field == "shape":
        entry["shape"] = data.draw(st.lists(HOSTILE_DIMS, max_size=5))
    elif field == "data_offsets":
        entry["data_offsets"] = data.draw(st.lists(HOSTILE_OFFSETS, min_size=0, max_size=3))
    elif field == "drop":
        del entry[data.draw(st.sampled_from(sorted(entry)))]
    else:
        header["__metadata__"] = data.draw(st.dictionaries(st.text(max_size=4),
                                                           st.integers() | st.text(max_size=4),
                                                           max_size=3))
    path = tmp_path_factory.mktemp("c") / "hostile.safetensors"
    path.write_bytes(_with_header(header, body))
    result = load_guarded(path)
    if not isinstance(result, CheckpointError):
        for key, tensor in result.items():
            start, stop = header[key]["data_offsets"]
            assert tensor.array.nbytes == stop - start


def test_truncated_checkpoint_message_says_what_to_do(tmp_path, checkpoint):
    path = tmp_path / "half.safetensors"
    path.write_bytes(checkpoint[:len(checkpoint) // 2])
    with pytest.raises(CheckpointError, match=r"half\.safetensors is not a readable safetensors"):
        mk.load(path)


# --- failing mid-write --------------------------------------------------------------------------

class WriteFailed(Exception):
    pass


def fail_halfway(monkeypatch):
    """Make the shared writer raise after writing half of the first chunk it is given."""
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, chunk):
            self.f.write(bytes(chunk)[:max(len(chunk) // 2, 1)])
            self.f.flush()
            raise WriteFailed("disk full, halfway through")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(atomic_file.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))


def _assert_untouched(folder, path, before: bytes):
    assert path.read_bytes() == before
    assert not [n for n in os.listdir(folder) if n.endswith(atomic_file.TEMP_SUFFIX)]


def test_write_atomically_failing_midway_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.bin"
    path.write_bytes(b"previous")
    fail_halfway(monkeypatch)
    with pytest.raises(WriteFailed):
        write_atomically(path, [b"new content that will not land"])
    _assert_untouched(tmp_path, path, b"previous")


def test_a_generator_raising_midway_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"previous")

    def chunks():
        yield b"half of it"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, chunks())
    _assert_untouched(tmp_path, path, b"previous")


def _small_net():
    mk.manual_seed(0)
    return mk.nn.Sequential(mk.nn.Linear(4, 3), mk.nn.ReLU())


def test_mk_save_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "net.safetensors"
    mk.save(_small_net().state_dict(), path)
    before = path.read_bytes()
    fail_halfway(monkeypatch)
    with pytest.raises(WriteFailed):
        mk.save({"w": mk.ones(100)}, path)
    _assert_untouched(tmp_path, path, before)
    assert sorted(mk.load(path)) == ["0.bias", "0.weight"]


@pytest.mark.parametrize("suffix", [".mkb", ".onnx"])
def test_export_failing_midway_keeps_the_previous_model(tmp_path, monkeypatch, suffix):
    from modelkit.exporter.export import export

    path = tmp_path / f"net{suffix}"
    x = np.ones((2, 4), np.float32)
    export(_small_net(), (x,), str(path))
    before = path.read_bytes()
    fail_halfway(monkeypatch)
    with pytest.raises(WriteFailed):
        export(mk.nn.Linear(4, 8), (x,), str(path))
    _assert_untouched(tmp_path, path, before)


def test_onnx_with_external_data_failing_midway_keeps_both_previous_files(tmp_path, monkeypatch):
    from modelkit.exporter import onnx_writer
    from modelkit.exporter.export import export

    path = tmp_path / "net.onnx"
    x = np.ones((2, 64), np.float32)
    onnx_writer.save(export(mk.nn.Linear(64, 32), (x,)), path, external_data=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["net.onnx", "net.onnx.data"]
    fail_halfway(monkeypatch)
    with pytest.raises(WriteFailed):
        onnx_writer.save(export(mk.nn.Linear(64, 16), (x,)), path, external_data=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_convert_failing_midway_keeps_the_previous_model(tmp_path, monkeypatch):
    from modelkit.converters.convert import convert
    from modelkit.exporter.export import export

    source, target = tmp_path / "net.onnx", tmp_path / "net.mkb"
    export(_small_net(), (np.ones((2, 4), np.float32),), str(source))
    convert(source, target)
    before = target.read_bytes()
    fail_halfway(monkeypatch)
    with pytest.raises(WriteFailed):
        convert(source, target, quantize="fp16")
    _assert_untouched(tmp_path, target, before)


def test_atomic_file_docstring_examples_run():
    import doctest

    result = doctest.testmod(atomic_file)
    assert result.attempted >= 3 and result.failed == 0
