"""`modelkit serve`: TorchServe-style and KServe v2 (Open Inference Protocol) serving of `.mkb`
models on the edge runtime.

Layout, one job per module: `store` (model store, names, config.json), `datatypes` (v2 names),
`wire` and `worker` (the per-model worker processes and their pipe protocol), `pool` (workers,
dynamic batching, restarts), `codecs` (request bodies to feeds and back), `inference_app` and
`management_app` (the two Starlette apps), `metrics` (Prometheus), `server` (both ports in one
event loop, signals).

Importing this package imports no web framework: Starlette, uvicorn and prometheus-client (the
`serve` extra) are imported only by the modules that need them.

Example:
    >>> from modelkit.edge_runtime.serving.datatypes import V2_TO_NUMPY
    >>> V2_TO_NUMPY["FP32"]
    'float32'
"""
