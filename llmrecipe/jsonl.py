"""JSON Lines files as the user wrote them: one JSON object per line, every problem named by its line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from llmrecipe.errors import StepError


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-empty line; a line that is not a JSON object stops with its number."""
    if not path.is_file():
        raise StepError(f"{path} does not exist; fix the path in the recipe (relative to the recipe file)")
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise StepError(f"{path.name} line {number}: not JSON ({error.msg}); one JSON object per line") from None
            if not isinstance(row, dict):
                raise StepError(f"{path.name} line {number}: a JSON object is needed, found {type(row).__name__}")
            yield number, row
