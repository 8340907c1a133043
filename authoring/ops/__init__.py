"""Primitive ops (one registry, `registry.OPS`) and the torch-like functions built on them.

Each family module declares its primitives (forward, vjp, ONNX lowering side by side) and
the public functions `mk.<fn>` that call them; `methods.py` attaches them to `Tensor`.
"""
