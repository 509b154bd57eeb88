"""Read a suite's JSONL file, checking each line has the keys the suite needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrecipe.errors import StepError
from llmrecipe.jsonl import json_objects


def read_jsonl(path: Path, required: dict[str, type | tuple[type, ...]], limit: int | None) -> list[dict[str, Any]]:
    """The first `limit` rows (all when None); a missing key or a wrong type names the line and the fix."""
    rows = []
    for number, row in json_objects(path):
        if limit is not None and len(rows) >= limit:
            break
        for key, kind in required.items():
            if not isinstance(row.get(key), kind):
                raise StepError(
                    f"{path.name} line {number}: needs key '{key}' of type {_names(kind)}; found keys {sorted(row)}"
                )
        rows.append(row)
    if not rows:
        raise StepError(f"{path.name}: no examples in the file; give it one JSON object per line")
    return rows


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
