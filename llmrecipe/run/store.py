"""Content-addressed artifact store: `<workdir>/store/<fingerprint>/`, committed atomically, checked before use.

A step's outputs are written into a staging folder; `manifest.json`, which lists every output file with its size
and sha256, is written last and the folder is renamed into place in one atomic step. So a folder under store/
with a readable manifest whose files match it is complete. Everything else is debris of a killed run, removed by
the next one (`sweep`): staging folders, resume state of steps that were committed after all, entries on their way
out (`forget` renames an entry into trash/ before deleting it, so no half-deleted entry ever looks complete).

Folders of a workdir: store/ (entries), staging/ (being written), scratch/ (resume state), trash/ (being deleted),
locks/ (who computes what, see locks.py), hashes/ (which files were hashed since they last changed, see
integrity.py) and index.json (each recipe's last fingerprints, for `plan` to call a change stale).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from llmrecipe.run.integrity import Drift, HashCache, check_files, digest_files, entry_files
from llmrecipe.run.locks import FileLock

MANIFEST = "manifest.json"


@dataclass
class EntryCheck:
    """What a look at a store entry found: `missing` (never committed), `ok`, or `corrupt` with its drifts."""

    state: str
    drifts: list[Drift] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def summary(self) -> str:
        shown = "; ".join(str(d) for d in self.drifts[:3])
        return shown + (f"; and {len(self.drifts) - 3} more" if len(self.drifts) > 3 else "")


class Store:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.root = workdir / "store"
        self.staging_root = workdir / "staging"
        self.scratch_root = workdir / "scratch"
        self.trash_root = workdir / "trash"
        self.locks_root = workdir / "locks"
        self.hashes_root = workdir / "hashes"

    def path(self, fingerprint: str) -> Path:
        return self.root / fingerprint

    def check(self, fingerprint: str, full: bool = False) -> EntryCheck:
        """Compare the entry's files with its manifest: sizes always, contents where the hash cache cannot vouch for
        them, everything with `full`."""
        folder = self.path(fingerprint)
        try:
            text = (folder / MANIFEST).read_text(encoding="utf-8")
        except FileNotFoundError:
            return EntryCheck("missing")
        except (OSError, UnicodeDecodeError) as error:
            return EntryCheck("corrupt", [Drift(MANIFEST, f"unreadable: {error}")])
        try:
            manifest = json.loads(text)
        except ValueError:
            return EntryCheck("corrupt", [Drift(MANIFEST, "empty" if not text.strip() else "not valid JSON")])
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            # Entries committed before manifests listed their files cannot be checked, and are trusted as before.
            return EntryCheck("ok", manifest=manifest if isinstance(manifest, dict) else None)
        cache = HashCache(self.hashes_root / f"{fingerprint}.json")
        drifts = check_files(folder, manifest["files"], cache, full)
        cache.save()
        return EntryCheck("corrupt" if drifts else "ok", drifts, manifest)

    def is_done(self, fingerprint: str) -> bool:
        return self.check(fingerprint).ok

    def manifest(self, fingerprint: str) -> dict[str, Any] | None:
        """The manifest of a committed entry that passes its check; None for a missing or corrupt entry."""
        checked = self.check(fingerprint)
        return checked.manifest if checked.ok else None

    def fingerprints(self) -> list[str]:
        """Every entry folder in the store, committed or not."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def entry_lock(self, fingerprint: str, about: dict[str, Any]) -> FileLock:
        """Held while computing, replacing or deleting the entry and its resume state."""
        return FileLock(self.locks_root / f"{fingerprint}.lock", about)

    def scratch(self, fingerprint: str) -> Path:
        path = self.scratch_root / fingerprint
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_staging(self, fingerprint: str) -> Path:
        path = self.staging_root / f"{fingerprint}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, fingerprint: str, staging: Path, manifest: dict[str, Any]) -> Path:
        """Move a finished step's outputs into the store under a manifest listing each file's size and sha256.
        Call while holding the entry's lock."""
        names = entry_files(staging, MANIFEST)
        manifest = {**manifest, "files": digest_files(staging, names)}
        _write_json_durably(staging / MANIFEST, manifest)
        final = self.path(fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a corrupt or incomplete entry this one replaces
            self._discard(final)
        os.replace(staging, final)
        _fsync_dir(final.parent)
        cache = HashCache(self.hashes_root / f"{fingerprint}.json")
        for name in names:  # renaming kept each file's inode and mtime: what was just hashed is what is stored
            cache.note(name, (final / name).stat(), manifest["files"][name]["sha256"])
        cache.save()
        shutil.rmtree(self.scratch_root / fingerprint, ignore_errors=True)
        return final

    def forget(self, fingerprint: str) -> None:
        """Drop a committed artifact and its resume state, so the step runs again from the start. The entry leaves
        the store in one rename: a kill at any moment leaves either the whole entry or none of it."""
        self._discard(self.path(fingerprint))
        self._discard(self.scratch_root / fingerprint)
        with contextlib.suppress(FileNotFoundError):
            (self.hashes_root / f"{fingerprint}.json").unlink()

    def _discard(self, folder: Path) -> None:
        if not folder.exists():
            return
        self.trash_root.mkdir(parents=True, exist_ok=True)
        doomed = self.trash_root / f"{folder.name}-{uuid.uuid4().hex[:8]}"
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Remove what killed runs left behind and nothing may trust: folders in trash/, staging folders and the
        resume state of committed steps, each only when no live run holds the entry's lock. Returns what it removed."""
        removed = []
        for doomed in _children(self.trash_root):
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(str(doomed))
        for staging in _children(self.staging_root):
            with self._unless_busy(staging.name.rsplit("-", 1)[0]) as free:
                if free:
                    shutil.rmtree(staging, ignore_errors=True)
                    removed.append(str(staging))
        for scratch in _children(self.scratch_root):
            if not (self.path(scratch.name) / MANIFEST).is_file():
                continue  # resume state of a step still to finish: the next run continues from it
            with self._unless_busy(scratch.name) as free:
                if free:
                    shutil.rmtree(scratch, ignore_errors=True)
                    removed.append(str(scratch))
        with FileLock(self.locks_root / "index.lock").acquire(wait=True):  # no run is writing the index meanwhile
            for temporary in self.workdir.glob(".index.json.*.tmp"):
                temporary.unlink(missing_ok=True)
        for temporary in self.hashes_root.glob(".*.tmp"):  # a cache file lost mid-write costs only a re-hash
            temporary.unlink(missing_ok=True)
        return removed

    @contextlib.contextmanager
    def _unless_busy(self, fingerprint: str) -> Iterator[bool]:
        lock = self.entry_lock(fingerprint, {"purpose": "cleaning up"})
        free = lock.try_acquire()
        try:
            yield free
        finally:
            if free:
                lock.release()

    def remember(self, run_name: str, step: str, fingerprint: str) -> None:
        """Note which fingerprint a recipe's step last completed with, so `plan` can call a change stale."""
        with FileLock(self.locks_root / "index.lock").acquire(wait=True):  # runs of other recipes update it too
            index = self.last_fingerprints_all()
            index.setdefault(run_name, {})[step] = fingerprint
            temporary = self.workdir / f".index.json.{os.getpid()}.tmp"
            temporary.write_text(json.dumps(index, indent=1, sort_keys=True))
            os.replace(temporary, self.workdir / "index.json")

    def last_fingerprints(self, run_name: str) -> dict[str, str]:
        return self.last_fingerprints_all().get(run_name, {})

    def last_fingerprints_all(self) -> dict[str, dict[str, str]]:
        try:
            index = json.loads((self.workdir / "index.json").read_text())
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except FileNotFoundError:
        return []


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
