"""Hostile files: a real `.mkb` truncated at 200 positions and with random bytes flipped in 1,000
copies. Loading must either fail with `ModelFormatError` / `UnsupportedOpError`, or succeed with
a session whose run gives finite results or raises `InvalidInputError` / `KernelError`. Never any
other exception, a crash or a hang.

The cases run in a child process: a crash (segfault, abort) shows as its exit status, a hang as
its timeout, and an address-space limit turns an unbounded allocation into a MemoryError that
is reported instead of exhausting the machine. Seeds are fixed.

A flipped byte inside a weight or a float attribute is a legal but different model (the format
has no checksum), which may well compute Inf or NaN; such cases may give non-finite results,
and only those.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from modelkit.edge_runtime import format as mkb
from modelkit.edge_runtime.format.model import Model, Node, ValueInfo

CHILD = r"""
import json, random, resource, signal, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")  # corrupted weights overflow on purpose
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from modelkit.edge_runtime import (InvalidInputError, KernelError, ModelFormatError,
                                   UnsupportedOpError, load)

path, feeds_path = sys.argv[1], sys.argv[2]
original = open(path, "rb").read()
feeds = dict(np.load(feeds_path))
reference = load(path)
reference_out = reference.run(feeds)


class Hang(Exception):
    pass


def on_alarm(*_):
    raise Hang()


signal.signal(signal.SIGALRM, on_alarm)


def numbers_of(model):
    values = [np.asarray(a).tobytes() for _, a in sorted(model.initializers.items())]
    for node in model.nodes:
        values += [repr(v) for _, v in sorted(node.attrs.items()) if isinstance(v, float)
                   or (isinstance(v, list) and v and isinstance(v[0], float))]
    return values


reference_numbers = numbers_of(reference.model)


def outcome(source):
    try:
        session = load(source)
    except (ModelFormatError, UnsupportedOpError):
        return "rejected at load"
    try:
        got = session.run(feeds)
    except (InvalidInputError, KernelError):
        return "loaded, run refused"
    if all(np.isfinite(v).all() for v in got.values() if v.dtype.kind == "f"):
        return "loaded, finite results"
    if numbers_of(session.model) != reference_numbers:
        return "loaded, non-finite from a corrupted weight"
    return "UNEXPECTED non-finite results"


def run_case(source):
    signal.alarm(5)
    try:
        return outcome(source)
    except Hang:
        return "UNEXPECTED hang"
    except BaseException as e:
        return f"UNEXPECTED {type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.alarm(0)


rng = random.Random(1234)
counts, unexpected, slowest = {}, [], 0.0
cases = []
for cut in sorted(rng.sample(range(len(original)), 200)):
    cases.append((f"truncated at {cut}", original[:cut]))
for k in range(1000):
    data = bytearray(original)
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    cases.append((f"flip copy {k}", bytes(data)))
for label, data in cases:
    start = time.perf_counter()
    result = run_case(data)
    slowest = max(slowest, time.perf_counter() - start)
    counts[result] = counts.get(result, 0) + 1
    if result.startswith("UNEXPECTED"):
        unexpected.append(f"{label}: {result}")
print(json.dumps({"counts": counts, "unexpected": unexpected[:20], "slowest_s": slowest}))
"""


def _model() -> tuple[Model, dict]:
    rng = np.random.default_rng(0)
    f32 = np.float32
    model = Model(
        inputs=[ValueInfo("image", "float32", ("batch", 2, 4, 4))],
        outputs=[ValueInfo("probs", "float32", ("batch", 5)), ValueInfo("top", "int64", ("batch",))],
        nodes=[
            Node("Flatten", ["image"], ["flat"], attrs={"axis": 1}, name="flatten"),
            Node("MatMul", ["flat", "w1"], ["h"], name="fc1", source="net.py:10"),
            Node("Add", ["h", "b1"], ["hb"], name="bias1"),
            Node("Relu", ["hb"], ["r"], name="relu1"),
            Node("Gemm", ["r", "w2", "b2"], ["logits"], attrs={"transB": 1, "alpha": 0.5}, name="fc2"),
            Node("Transpose", ["logits"], ["lt"], attrs={"perm": [1, 0]}, name="t"),
            Node("Transpose", ["lt"], ["l2"], attrs={"perm": [1, 0]}, name="t_back"),
            Node("Softmax", ["l2"], ["probs"], attrs={"axis": -1}, name="softmax"),
            Node("ArgMax", ["probs"], ["top"], attrs={"axis": 1, "keepdims": 0}, name="argmax"),
        ],
        initializers={"w1": rng.standard_normal((32, 16)).astype(f32) * f32(0.3),
                      "b1": rng.standard_normal(16).astype(f32),
                      "w2": rng.standard_normal((5, 16)).astype(f32) * f32(0.3),
                      "b2": rng.standard_normal(5).astype(f32)},
        metadata={"purpose": "fuzzing"},
    )
    return model, {"image": rng.standard_normal((3, 2, 4, 4)).astype(f32)}


def test_truncated_and_corrupted_files_fail_cleanly(tmp_path):
    model, feeds = _model()
    path = tmp_path / "model.mkb"
    mkb.write(model, path)
    np.savez(tmp_path / "feeds.npz", **feeds)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "feeds.npz")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"the child crashed ({done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["unexpected"] == [], report
    counts = report["counts"]
    assert sum(counts.values()) == 1200
    # the fuzzing reached both the validation and the run (not everything rejected up front)
    assert counts.get("rejected at load", 0) > 200 and counts.get("loaded, finite results", 0) > 10, counts
