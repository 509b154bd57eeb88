"""The reference an `import` artifact keeps to its checkpoint's weights instead of a copy. Torch-free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmrecipe.digests import cached_sha256
from llmrecipe.errors import StepError

REFERENCE = "checkpoint.json"
"""In an import artifact: {"folder", "dtype", "files": [{"name", "sha256", "size"}]}."""


def read_reference(model_dir: Path) -> dict[str, Any] | None:
    """The artifact's checkpoint reference, or None for an artifact that holds its own weights."""
    path = model_dir / REFERENCE
    return json.loads(path.read_text()) if path.is_file() else None


def check_unchanged(folder: Path, files: list[dict[str, Any]]) -> None:
    """Every referenced file is where it was, with the content it had when planned (the digest is cached by file
    identity, so an unchanged file is not read again)."""
    for entry in files:
        path = folder / entry["name"]
        if not path.is_file():
            raise StepError(f"{path} is gone: the imported checkpoint was moved or deleted. Put it back, or point the "
                            "import step's `path` at its new place and run again")
        if path.stat().st_size != entry["size"] or cached_sha256(path) != entry["sha256"]:
            raise StepError(f"{path} changed since it was imported: run the recipe again so the import step (and the "
                            "steps after it) take the new content")
