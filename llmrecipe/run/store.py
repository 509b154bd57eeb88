"""Content-addressed artifact store: `<workdir>/store/<fingerprint>/`, committed atomically.

A step's outputs are written into a staging folder; `manifest.json` is written last and the folder is
renamed into place in one atomic step. So a folder under store/ with a manifest is complete, and a
run killed at any moment leaves only staging debris that the next run removes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class Store:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.root = workdir / "store"
        self.staging_root = workdir / "staging"
        self.scratch_root = workdir / "scratch"

    def path(self, fingerprint: str) -> Path:
        return self.root / fingerprint

    def is_done(self, fingerprint: str) -> bool:
        return (self.path(fingerprint) / MANIFEST).is_file()

    def manifest(self, fingerprint: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.path(fingerprint) / MANIFEST).read_text())
        except FileNotFoundError:
            return None

    def scratch(self, fingerprint: str) -> Path:
        path = self.scratch_root / fingerprint
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_staging(self, fingerprint: str) -> Path:
        path = self.staging_root / f"{fingerprint}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def clear_staging(self) -> None:
        """Remove half-written outputs of killed runs. Call only while holding the workdir lock."""
        shutil.rmtree(self.staging_root, ignore_errors=True)

    def commit(self, fingerprint: str, staging: Path, manifest: dict[str, Any]) -> Path:
        _write_json_durably(staging / MANIFEST, manifest)
        final = self.path(fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an incomplete leftover (no manifest) from an older layout or a crash
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(final.parent)
        shutil.rmtree(self.scratch_root / fingerprint, ignore_errors=True)
        return final

    def remember(self, run_name: str, step: str, fingerprint: str) -> None:
        """Note which fingerprint a recipe's step last completed with, so `plan` can call a change stale."""
        index = self.last_fingerprints_all()
        index.setdefault(run_name, {})[step] = fingerprint
        temporary = self.workdir / "index.json.tmp"
        temporary.write_text(json.dumps(index, indent=1, sort_keys=True))
        os.replace(temporary, self.workdir / "index.json")

    def last_fingerprints(self, run_name: str) -> dict[str, str]:
        return self.last_fingerprints_all().get(run_name, {})

    def last_fingerprints_all(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads((self.workdir / "index.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def forget(self, fingerprint: str) -> None:
        """Drop a committed artifact and its resume state, so the step runs again from the start."""
        shutil.rmtree(self.path(fingerprint), ignore_errors=True)
        shutil.rmtree(self.scratch_root / fingerprint, ignore_errors=True)


def _write_json_durably(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
