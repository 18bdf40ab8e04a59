"""pydantic's validation errors as a person reads them: one wording for the config files,
scenario files and `nabij replay --set`, each problem at the key path where it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

# An order keeps its arrays as tuples (smaller); the file, the store and `--set` still hold lists.
_WORDING = {"extra_forbidden": "unknown key", "tuple_type": "Input should be a valid list"}

Location = tuple[str | int, ...]


@dataclass(frozen=True)
class KeyProblem:
    location: Location
    message: str

    @property
    def path(self) -> str:
        return dotted(self.location)


def key_problems(err: ValidationError) -> list[KeyProblem]:
    """Every error of `err`: its key location (without pydantic's union member names) and a
    message ("unknown key" for a key the model does not have)."""
    return [
        KeyProblem(
            tuple(part for part in item["loc"] if not _is_union_tag(part)),
            _WORDING.get(item["type"], item["msg"].removeprefix("Value error, ")),
        )
        for item in err.errors()
    ]


def dotted(location: Sequence[str | int]) -> str:
    """`order[1].zone[0].radius_m`: keys joined by dots, list positions in brackets."""
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_union_tag(part: object) -> bool:
    # pydantic puts the union member's name ("float", "function-after[...]",
    # "constrained-float") in the location.
    return isinstance(part, str) and (
        "[" in part or "-" in part or part in {"float", "int", "str", "none"}
    )
