"""Exceptions raised by the converters."""


class ConversionError(Exception):
    """A model could not be converted; `problems` lists every problem found, with node names."""

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)
