"""The run record, `<workdir>/runs/<run-id>/`: what was asked, what ran, on what, and how it went."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import sys
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llmrecipe.errors import WorkdirBusy

PACKAGES = ("llmrecipe", "torch", "polars", "numpy", "tokenizers", "safetensors", "onnx", "onnxruntime",
            "onnxruntime-gpu", "onnxscript", "pydantic")


class WorkdirLock:
    """One writer per workdir. flock is released by the kernel when the holder dies, even by kill -9."""

    def __init__(self, workdir: Path):
        self.path = workdir / "lock"
        self._file = None

    def __enter__(self) -> "WorkdirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise WorkdirBusy(
                f"{self.path.parent} is in use by {holder}; wait for that run to finish, or give this one "
                "another workdir (--workdir)"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {platform.node()}")
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class RunRecord:
    def __init__(self, workdir: Path, name: str):
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_id = f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"
        self.dir = workdir / "runs" / self.run_id
        self.dir.mkdir(parents=True)
        self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")

    def write_json(self, filename: str, data: Any) -> None:
        (self.dir / filename).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")

    def write_text(self, filename: str, text: str) -> None:
        (self.dir / filename).write_text(text, encoding="utf-8")

    def event(self, record: dict[str, Any]) -> None:
        self._events.write(_event_line(record))
        self._events.flush()

    def step_events(self, step: str) -> StepEvents:
        return StepEvents(str(self.dir / "events.jsonl"), step)

    def close(self) -> None:
        self._events.close()


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


def environment(device: str) -> dict[str, Any]:
    """Versions and machine facts, read from package metadata so that torch is not imported for it."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "packages": versions,
    }


def latest_runs(workdir: Path) -> list[Path]:
    """Run records, newest first."""
    runs = workdir / "runs"
    if not runs.is_dir():
        return []
    return sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
