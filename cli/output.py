"""Small text helpers the commands share: byte sizes and progress that only a terminal sees.

Example:
    >>> human_bytes(1536), human_bytes(12)
    ('1.5 KiB', '12 B')
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

import click

T = TypeVar("T")


def human_bytes(n: float) -> str:
    """`n` bytes as B / KiB / MiB / GiB.

    Example: see the module docstring.
    """
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def progress(items: Iterable[T], label: str, length: int | None = None) -> Iterator[T]:
    """Iterate `items` with a progress bar on stderr when stderr is a terminal; silently when
    piped or redirected.

    Example:
        >>> list(progress(range(3), "counting"))
        [0, 1, 2]
    """
    if not sys.stderr.isatty():
        yield from items
        return
    with click.progressbar(items, label=label, length=length, file=sys.stderr) as bar:
        yield from bar


def parse_dims(items: Iterable[str]) -> dict[str, int]:
    """`--dim batch=8` options as {"batch": 8}.

    Example:
        >>> parse_dims(["batch=8", "seq=16"])
        {'batch': 8, 'seq': 16}
    """
    dims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isdigit():
            raise click.BadParameter(f"{item!r}: expected NAME=SIZE, like batch=8", param_hint="--dim")
        dims[name] = int(value)
    return dims
