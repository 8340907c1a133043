"""KServe v2 / Triton datatype names and the numpy dtype names the edge runtime uses.

https://github.com/kserve/open-inference-protocol (Tensor Data Types). BF16 has no numpy dtype and
is absent.

Example:
    >>> NUMPY_TO_V2["int64"], TRITON_CONFIG_TYPES["FP32"]
    ('INT64', 'TYPE_FP32')
"""

V2_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
    "BYTES": "string",
}
NUMPY_TO_V2 = {numpy_name: v2 for v2, numpy_name in V2_TO_NUMPY.items()}

# Triton's model-config spelling (`GET /v2/models/{name}/config`, read by perf_analyzer).
TRITON_CONFIG_TYPES = {v2: "TYPE_STRING" if v2 == "BYTES" else f"TYPE_{v2}" for v2 in V2_TO_NUMPY}
