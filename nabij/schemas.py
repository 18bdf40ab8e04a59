"""JSON Schema export of the wire contract, from the same structs the code uses."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from nabij.contract import SCHEMA_TYPES


def render_schemas() -> dict[str, str]:
    """File name -> schema text, deterministic so `docs/schemas/` can be checked for drift."""
    out: dict[str, str] = {}
    for name, message_type in SCHEMA_TYPES.items():
        schema = msgspec.json.schema(message_type)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"nabij {name}"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
