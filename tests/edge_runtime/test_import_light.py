"""`import modelkit.edge_runtime`, and loading and running a model with it, pull in none of the
heavy or higher-level packages (checked in a fresh interpreter, where nothing is imported yet)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("onnx", "onnxruntime", "click", "cupy", "modelkit.authoring", "modelkit.exporter",
             "modelkit.converters", "modelkit.cli")

SCRIPT = """
import json, sys
import numpy as np
import modelkit.edge_runtime as rt
from modelkit.edge_runtime.format.model import Model, Node, ValueInfo
m = Model(inputs=[ValueInfo("x", "float32", ("n", 3))], outputs=[ValueInfo("y", "float32", ("n", 2))],
          nodes=[Node("MatMul", ["x", "w"], ["h"]), Node("Relu", ["h"], ["y"])],
          initializers={"w": np.ones((3, 2), np.float32)})
y = rt.load(rt.format.write(m)).run({"x": np.ones((4, 3), np.float32)})["y"]
assert y.shape == (4, 2) and float(y.sum()) == 24.0, y
forbidden = json.loads(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))))
"""


def test_edge_runtime_imports_and_runs_without_heavy_dependencies():
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(FORBIDDEN)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
