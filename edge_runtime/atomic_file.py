"""Write files so that readers see the old content or the new, never a partial one.

Every model and checkpoint writer (`.mkb`, `.onnx` and its external data, `mk.save`) goes
through this module: the bytes go to a temporary file in the target's folder (same file system,
so the rename is atomic), are flushed to disk, and the temporary file is renamed over the
target. A failure at any point, an exception or Ctrl-C, removes the temporary file and leaves the
previous file untouched.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.bin")
    >>> write_atomically(path, [b"ab", b"c"])
    >>> open(path, "rb").read(), os.listdir(os.path.dirname(path))
    (b'abc', ['model.bin'])
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Union

__all__ = ["write_atomically", "write_files_atomically", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"
"""Temporary files are named `.<target name>.<random hex>.tmp`, hidden beside the target."""

PathLike = Union[str, os.PathLike]


def write_atomically(path: PathLike, chunks: Iterable[bytes]) -> None:
    """Write the concatenated `chunks` to `path` through a temporary file and a rename.

    `chunks` may be a generator; it is consumed while writing, so a generator that raises
    midway leaves the previous `path` as it was and no temporary file behind.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "w.bin")
        >>> write_atomically(path, (bytes([i]) for i in range(3)))
        >>> open(path, "rb").read()
        b'\\x00\\x01\\x02'
    """
    write_files_atomically({path: chunks})


def write_files_atomically(files: Mapping[PathLike, Iterable[bytes]]) -> None:
    """Write several files that belong together (a model and its external weights): every
    file is written to its temporary name first, in the mapping's order, and only when all of
    them are complete are they renamed into place. A failure while writing leaves every
    previous file as it was.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_files_atomically({os.path.join(folder, "m.onnx.data"): [b"w"],
        ...                         os.path.join(folder, "m.onnx"): [b"graph"]})
        >>> sorted(os.listdir(folder))
        ['m.onnx', 'm.onnx.data']
    """
    temps = []
    try:
        for path, chunks in files.items():
            temps.append((_temp_name(path), os.fspath(path)))
            _write_and_sync(temps[-1][0], chunks)
        for temp, path in temps:
            os.replace(temp, path)
    except BaseException:
        for temp, _ in temps:
            if os.path.exists(temp):
                os.remove(temp)
        raise


def _temp_name(path: PathLike) -> str:
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{base}.{os.urandom(6).hex()}{TEMP_SUFFIX}")


def _write_and_sync(temp: str, chunks: Iterable[bytes]) -> None:
    # os.open with 0o666 rather than mkstemp (which creates 0600 files), so the umask decides
    # the permissions as it does for any file the user writes.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
