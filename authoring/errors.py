"""Exceptions raised by modelkit.authoring on purpose.

They subclass the built-in types a PyTorch user already catches (RuntimeError for shape
problems, TypeError for dtype problems), so `except RuntimeError` keeps working.
"""


class ShapeError(RuntimeError, ValueError):
    """Operand shapes do not fit the op; the message names the op and every shape involved."""


class DTypeError(TypeError, RuntimeError):
    """An operand has a dtype the op cannot take; the message names the op and the dtypes."""


# --- checkpoints (mk.save / mk.load; owned by the nn/optim/data issue) ---------------------

class CheckpointError(RuntimeError):
    """A checkpoint file is not a readable safetensors file (wrong format, truncated, corrupt),
    or an object cannot be saved as one; the message names the file."""
