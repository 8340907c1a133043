"""One way for every command to fail: a readable line and a hint on stderr, exit code 2, and the
traceback only with `--debug` (DESIGN §7: 0 ok, 1 check failed, 2 usage or input error).

Example:
    >>> import click
    >>> from click.testing import CliRunner
    >>> @click.command()
    ... @friendly_errors
    ... def cmd():
    ...     raise FileNotFoundError("model.mkb: no such file")
    >>> result = CliRunner().invoke(cmd, [])
    >>> result.exit_code, result.output.splitlines()[0]
    (2, 'error: model.mkb: no such file')
"""

from __future__ import annotations

import functools
import sys
import traceback

import click

USAGE_ERROR = 2
CHECK_FAILED = 1

# exception class name -> hint; matched along the exception's class hierarchy, so that this module
# needs no import of the components (the CLI starts fast and `--help` imports nothing heavy)
HINTS = {
    "FileNotFoundError": "check the path",
    "IsADirectoryError": "give a model file, not a folder",
    "UnknownSuffixError": "model files end in .onnx or .mkb",
    "ConversionError": "`modelkit inspect MODEL` shows the model's ops and opsets",
    "ModelFormatError": "the file is not a valid model (truncated or corrupt?): export or convert "
                        "it again",
    "InvalidInputError": "`modelkit inspect MODEL` lists the model's inputs with dtypes and shapes",
    "UnsupportedOpError": "register a kernel with modelkit.edge_runtime.register_kernel, or export "
                          "the model with ops the runtime supports",
    "KernelError": "run with --debug for the traceback",
    "ExportError": "see `modelkit export --help` for what a model.py defines",
}
DEFAULT_HINT = "run with --debug for the traceback"


def friendly_errors(command):
    """Decorate a click command function: adds `--debug` and turns any exception into
    `error: <first line>` + `hint: ...` on stderr and exit code 2.

    Example: see the module docstring.
    """
    @click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
    @functools.wraps(command)
    def run(*args, debug: bool = False, **kwargs):
        try:
            return command(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001  (the CLI's one place that reports errors)
            if debug:
                traceback.print_exc()
            report(error)
            sys.exit(USAGE_ERROR)
    return run


def report(error: BaseException) -> None:
    """Print `error` as one line (plus each problem a ConversionError lists) and its hint.

    Example: see the module docstring.
    """
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if type(error).__module__.split(".")[0] not in ("modelkit", "builtins") or not text:
        first = f"{type(error).__name__}: {first}"
    click.echo(f"error: {first}", err=True)
    for problem in getattr(error, "problems", []):
        if problem not in first:
            click.echo(f"  {problem}", err=True)
    click.echo(f"hint: {hint_for(error)}", err=True)


def hint_for(error: BaseException) -> str:
    """The hint for the error that caused `error`, else for `error`'s class or its nearest base
    class that has one.

    Example:
        >>> hint_for(FileNotFoundError())
        'check the path'
    """
    for candidate in (error.__cause__, error):
        for cls in type(candidate).__mro__ if candidate is not None else ():
            if cls.__name__ in HINTS:
                return HINTS[cls.__name__]
    return DEFAULT_HINT
