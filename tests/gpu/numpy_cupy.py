"""A stand-in for cupy backed by numpy, to run the CUDA session's plumbing (feeds in, the plan
with a non-numpy `xp`, outputs out, CUDA graph capture and its fallback) on a machine without
a GPU. Array functions are numpy's; devices, streams and graphs only record what was asked.
The real cupy path runs in the cuda-marked tests."""

from __future__ import annotations

import types

import numpy as np


class FakeDevice:
    def __init__(self, id=0):  # noqa: A002  (cupy's name)
        self.id = id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass


class FakeGraph:
    def __init__(self):
        self.launches = 0

    def launch(self, stream=None):
        self.launches += 1


class FakeStream:
    def __init__(self, non_blocking=False, refuse_capture=None):
        self.capturing = False
        self.refuse_capture = refuse_capture
        self.graphs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        if self.capturing:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported: synchronize while capturing")

    def begin_capture(self):
        if self.refuse_capture is not None:
            raise self.refuse_capture
        self.capturing = True

    def end_capture(self):
        self.capturing = False
        self.graphs.append(FakeGraph())
        return self.graphs[-1]

    def wait_event(self, event):
        pass

    def record(self):
        return object()


class GpuArrayType:
    """Nothing is an instance: every array of this stand-in is a numpy array."""


def numpy_cupy(device_count=1, refuse_capture=None) -> types.ModuleType:
    """A module that answers like cupy: numpy's functions, fake devices and streams."""
    module = types.ModuleType("cupy")
    module.__getattr__ = lambda name: getattr(np, name)
    module.ndarray = GpuArrayType
    streams = []

    def stream(non_blocking=False):
        streams.append(FakeStream(non_blocking, refuse_capture))
        return streams[-1]
    runtime = types.SimpleNamespace(getDeviceCount=lambda: device_count, getDevice=lambda: 0)
    module.cuda = types.SimpleNamespace(
        runtime=runtime, Device=lambda index=0: FakeDevice(index or 0), Stream=stream,
        MemoryPool=lambda: types.SimpleNamespace(malloc=None),
        using_allocator=lambda malloc: FakeDevice(), get_current_stream=lambda: FakeStream())
    module.streams = streams
    return module
