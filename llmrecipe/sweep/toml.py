"""Recipe values written back as TOML: a trial's values as `--set` text, and a whole recipe as a file to run."""

from __future__ import annotations

import json
import math
from typing import Any

from llmrecipe.recipe.explain import toml_key


def toml_value(value: Any) -> str:
    """One value as TOML reads it back: `3e-4`, `true`, `"text"`, `[1, 2]`, `{ a = 1 }`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no place in a recipe")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_document(data: dict[str, Any], header: str = "") -> str:
    """A recipe dict as a TOML file: scalars and lists first, then one [table] per nested table (step tables as
    `[steps.NAME]`, their own nested tables inline)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in data.items() if not _is_section(k, v, path)}
    sections = {k: v for k, v in data.items() if _is_section(k, v, path)}
    if path and (plain or not sections):
        lines += ["", "[" + ".".join(toml_key(p) for p in path) + "]"]
    lines += [f"{toml_key(str(k))} = {toml_value(v)}" for k, v in plain.items()]
    for key, value in sections.items():
        _table(value, [*path, str(key)], lines)


def _is_section(key: str, value: Any, path: list[str]) -> bool:
    """Top-level tables ([run], [steps], [sweep]) and each step's table get headers; anything deeper is inline."""
    return isinstance(value, dict) and (len(path) == 0 or path == ["steps"])
