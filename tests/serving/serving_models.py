"""Models and a model store for the serving tests, built with onnx.helper and converted to .mkb.

- `mlp`: MatMul/Tanh/Softmax with a symbolic batch dim (batchable), from the converter fixtures.
- `spec_example`: the model of the KServe v2 protocol's own example request
  (input0 UINT32 [2, 2], input1 BOOL [3] -> output0 FP32 [3, 2], output1 BOOL [3]).
- `matmul_power`: takes n (int64 [1]) and computes sum(ones(n, n) @ ones(n, n)) = n**3: as slow as
  the caller wants, from a tiny request.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "converters"))
from onnx_fixture_models import mlp  # noqa: E402

from modelkit.edge_runtime import format as model_format  # noqa: E402
from modelkit.edge_runtime.format.onnx_reader import read_onnx  # noqa: E402


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def spec_example():
    """output0 = concat(cast(input0, FP32), [[0.5, 0.5]]); output1 = not(input1)."""
    nodes = [helper.make_node("Cast", ["input0"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Concat", ["f", "half"], ["output0"], axis=0),
             helper.make_node("Not", ["input1"], ["output1"])]
    return _model(nodes,
                  [helper.make_tensor_value_info("input0", TensorProto.UINT32, [2, 2]),
                   helper.make_tensor_value_info("input1", TensorProto.BOOL, [3])],
                  [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [3, 2]),
                   helper.make_tensor_value_info("output1", TensorProto.BOOL, [3])],
                  [numpy_helper.from_array(np.full((1, 2), 0.5, np.float32), "half")])


def matmul_power():
    nodes = [helper.make_node("Concat", ["n", "n"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                              value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("MatMul", ["ones", "ones"], ["square"]),
             helper.make_node("ReduceSum", ["square"], ["y"], keepdims=0)]
    return _model(nodes, [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])


HANDLER = '''
import json
import numpy as np

def preprocess(body, content_type):
    values = [float(v) for v in body.decode().split(",")]
    return {"x": np.array([values], np.float32)}

def postprocess(outputs):
    return {"label": int(outputs["probs"].argmax()), "content": "text"}
'''


def write_mkb(proto, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model_format.write(read_onnx(proto), path)


def build_store(root: str, outside: str) -> dict:
    """Fill `root` with the test models (and a few that must be refused); `outside` is a folder
    beyond the store for symlink escapes. Returns the ONNX protos by name, for oracles."""
    mlp_proto = mlp()[0]
    write_mkb(mlp_proto, f"{root}/mlp.mkb")
    write_mkb(mlp_proto, f"{root}/mlp_batched/1/model.mkb")
    _config(root, "mlp_batched", {"max_batch_size": 64, "max_queue_delay_us": 300_000})
    write_mkb(mlp_proto, f"{root}/extra.mkb")
    write_mkb(spec_example(), f"{root}/mymodel.mkb")
    write_mkb(matmul_power(), f"{root}/slow/1/model.mkb")
    _config(root, "slow", {"response_timeout": 0.3})
    for version in ("1", "2"):
        write_mkb(matmul_power(), f"{root}/busy/{version}/model.mkb")
    _config(root, "busy", {"timeout_s": 60, "job_queue_size": 2})
    write_mkb(mlp_proto, f"{root}/texty/1/model.mkb")
    with open(f"{root}/texty/handler.py", "w") as f:
        f.write(HANDLER)
    _config(root, "texty", {"handler": "handler.py"})
    # Refused at registration:
    with open(f"{root}/broken.mkb", "wb") as f:
        f.write(b"MKB1 this is not a model" * 10)
    write_mkb(mlp_proto, f"{outside}/stolen.mkb")
    os.symlink(f"{outside}/stolen.mkb", f"{root}/escape.mkb")
    os.makedirs(f"{root}/evil/1")
    os.symlink(f"{outside}/stolen.mkb", f"{root}/evil/1/model.mkb")
    return {"mlp": mlp_proto, "mymodel": spec_example()}


def _config(root, name, values):
    with open(f"{root}/{name}/config.json", "w") as f:
        json.dump(values, f)
