"""Training metrics as JSONL that survives a resume: lines past the resumed step are dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


class MetricsLog:
    def __init__(self, path: Path, resume_step: int, event: Callable[[dict[str, Any]], None], enabled: bool = True):
        self.path = path
        self.event = event
        self.enabled = enabled
        """False in all but the main process of a distributed run: one writer per file."""
        self.records = [r for r in _read(path) if r["step"] <= resume_step]  # a killed run wrote past its checkpoint
        self._rewrite()

    def truncate(self, step: int) -> None:
        """Forget records past `step` (after rolling back to the checkpoint of that step)."""
        self.records = [r for r in self.records if r["step"] <= step]
        self._rewrite()

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.event({"event": "metrics", **record})

    def _rewrite(self) -> None:
        if not self.enabled:
            return
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut short
            break
    return records
