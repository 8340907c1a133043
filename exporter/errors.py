"""Exceptions raised by the exporter."""


class ExportError(Exception):
    """Tracing or writing a model failed; the message names the op or argument and source line."""


class TracerWarning(UserWarning):
    """A traced value was turned into a Python value, so the export bakes it in as a constant."""
