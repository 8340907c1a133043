"""Exceptions raised by the edge runtime; catch these, never a bare Exception."""


class EdgeRuntimeError(Exception):
    """Base class of every error the edge runtime raises on purpose."""


class ModelFormatError(EdgeRuntimeError):
    """A model file is malformed, truncated, hostile or from a newer, incompatible writer."""


class InvalidInputError(EdgeRuntimeError, ValueError):
    """`Session.run` got feeds that do not match the model's input spec."""


class UnsupportedOpError(EdgeRuntimeError):
    """The model uses operators that have no kernel; `missing` lists every one of them."""

    def __init__(self, message, missing=()):
        super().__init__(message)
        self.missing = list(missing)


class KernelError(EdgeRuntimeError):
    """A kernel failed while executing a node; the message names the node and its op."""


class CudaUnavailableError(EdgeRuntimeError, RuntimeError):
    """A CUDA device was asked for, but cupy is not installed, sees no GPU, or lacks that index."""
