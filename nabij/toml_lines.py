"""Where each key of a TOML file is defined, so configuration errors can name the line."""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def key_lines(path: Path) -> dict[tuple[str | int, ...], int]:
    """Map each key path in a TOML file to the line that defines it (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    lines: dict[tuple[str | int, ...], int] = {}
    array_counts: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            names = tuple(_unquote(n) for n in header.group(2).split("."))
            if header.group(1) == "[[":
                # Count per parent instance: order[1].zone restarts at 0 after order[0].zone.
                array = (*_indexed(names[:-1], array_counts), names[-1])
                index = array_counts.get(array, -1) + 1
                array_counts[array] = index
                table = (*array, index)
            else:
                table = _indexed(names, array_counts)
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            lines.setdefault((*table, *(_unquote(k) for k in key.group(1).split("."))), number)
    return lines


def _indexed(
    names: tuple[str, ...], array_counts: dict[tuple[str | int, ...], int]
) -> tuple[str | int, ...]:
    """Insert the current index after every array-of-tables prefix: order.zone -> order,2,zone."""
    out: list[str | int] = []
    for name in names:
        out.append(name)
        if (index := array_counts.get(tuple(out))) is not None:
            out.append(index)
    return tuple(out)


def _unquote(name: str) -> str:
    return name.strip().strip("\"'")


def line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if (line := lines.get(loc[:end])) is not None:
            return line
    return None
