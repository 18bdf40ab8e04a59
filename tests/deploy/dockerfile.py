"""Just enough of the Dockerfile grammar to run its steps outside a container engine."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    argument: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        return self.all(keyword)[-1]


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile: comments dropped, continuation lines joined."""
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, argument = line.partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword == "FROM":
            base, _, name = argument.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            stages[-1].instructions.append(Instruction(keyword, argument))
    return stages


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


def command(argument: str) -> list[str]:
    """CMD / ENTRYPOINT / HEALTHCHECK CMD arguments: exec form (JSON) or shell form."""
    if argument.startswith("["):
        words: list[str] = json.loads(argument)
        return words
    return ["/bin/sh", "-c", argument]


def healthcheck_command(argument: str) -> list[str]:
    """`HEALTHCHECK [--option=value ...] CMD ...` without its options."""
    _options, _, rest = argument.partition("CMD ")
    return command(rest.strip())


def env(argument: str) -> dict[str, str]:
    """`ENV A=1 B=2` (the key=value form)."""
    return dict(word.split("=", 1) for word in shlex.split(argument))
