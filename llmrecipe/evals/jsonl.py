"""Read a suite's JSONL file, checking each line has the keys the suite needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmrecipe.errors import StepError


def read_jsonl(path: Path, required: dict[str, type | tuple[type, ...]], limit: int | None) -> list[dict[str, Any]]:
    """The first `limit` rows (all when None); a missing key or a wrong type names the line and the fix."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise StepError(f"{path.name} line {number}: not JSON ({error}); one JSON object per line") from None
            for key, kind in required.items():
                if not isinstance(row, dict) or not isinstance(row.get(key), kind):
                    raise StepError(
                        f"{path.name} line {number}: needs key '{key}' of type {_names(kind)}; "
                        f"found keys {sorted(row) if isinstance(row, dict) else type(row).__name__}"
                    )
            rows.append(row)
    if not rows:
        raise StepError(f"{path.name}: no examples in the file; give it one JSON object per line")
    return rows


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
