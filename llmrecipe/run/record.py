"""The run record, `<workdir>/runs/<run-id>/`: what was asked, what ran, on what, and how it went.

recipe.toml and recipe.json (as written and as resolved), plan.json, events.jsonl (one line per event, appended as
the run goes), and at the end report.md/report.json, status.json and manifest.json (see provenance.py).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrecipe.run.space import storage_problem


def new_run_id(name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"


class RunRecord:
    def __init__(self, workdir: Path, name: str, run_id: str | None = None):
        self.run_id = run_id or new_run_id(name)
        self.dir = workdir / "runs" / self.run_id
        self.dir.mkdir(parents=True)
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")
        self.lost: list[str] = []
        """What could not be written while the run was already failing (a full disk): the record says so."""

    def write_json(self, filename: str, data: Any) -> None:
        (self.dir / filename).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")

    def write_text(self, filename: str, text: str) -> None:
        (self.dir / filename).write_text(text, encoding="utf-8")

    def event(self, record: dict[str, Any]) -> None:
        self._events.write(_event_line(record))
        self._events.flush()

    def note(self, record: dict[str, Any]) -> None:
        """An event written while the run fails or stops: a full or read-only disk must not hide the first error."""
        try:
            self.event(record)
        except OSError as error:
            if storage_problem(error) is None:
                raise
            self.lost.append(f"event {record.get('event')}")

    def keep(self, filename: str, text: str) -> str | None:
        """Write a file of the failure's story where the disk allows; its path, or None when it could not be kept."""
        try:
            self.write_text(filename, text)
        except OSError as error:
            if storage_problem(error) is None:
                raise
            self.lost.append(filename)
            return None
        return str(self.dir / filename)

    def step_events(self, step: str) -> StepEvents:
        return StepEvents(str(self.dir / "events.jsonl"), step)

    def close(self) -> None:
        try:
            self._events.close()
        except OSError:  # the last buffered line met a full disk; the record lists what it lost
            self.lost.append("events.jsonl (its last lines)")


@dataclass(frozen=True)
class StepEvents:
    """Appends one step's records (metrics lines, warnings) to the run's events.jsonl. Plain data, so the
    training processes that `run.nproc` spawns can be handed one and log like a step run in-process."""

    path: str
    step: str

    def __call__(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as events:  # one write per line: appends stay whole
            events.write(_event_line({"step": self.step, **record}))


def _event_line(record: dict[str, Any]) -> str:
    return json.dumps({"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), **record}) + "\n"


def latest_runs(workdir: Path) -> list[Path]:
    """Run records, newest first."""
    runs = workdir / "runs"
    if not runs.is_dir():
        return []
    return sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
