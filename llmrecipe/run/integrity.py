"""Digests of a store entry's files and the checks that find a drifted one before it is used.

A committed entry's manifest lists every output file with its size and sha256. Checking an entry compares the
files on disk with that list: sizes always (a stat per file), contents by re-hashing. Re-hashing gigabytes on every
`status` would be slow, so a hash cache remembers, per file, the (device, inode, size, mtime) at which it last
matched: a file with the same stat is the same file we hashed, and only a file that something touched since
(a different inode or mtime) is hashed again. A full check (`--verify`, `llmrecipe verify`) re-hashes everything,
which also finds damage that leaves the stat alone (a failing disk).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrecipe.digests import sha256_file  # the digest the plan takes of the files a recipe reads (here uncached)


@dataclass(frozen=True)
class Drift:
    """One way an entry differs from its manifest: `path` inside the entry, and what is wrong with it."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def entry_files(folder: Path, skip: str) -> list[str]:
    """Every file under `folder` but the top-level `skip` (the manifest), as sorted POSIX paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            relative = (Path(root) / name).relative_to(folder).as_posix()
            if relative != skip:
                found.append(relative)
    return sorted(found)


def digest_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The manifest's file list: each file's size and sha256."""
    return {name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)} for name in names}


class HashCache:
    """Per entry, the stat of each file at the moment its content last matched the manifest (a JSON file per entry).

    Losing it costs only a re-hash, so it is written best-effort: a read-only or full workdir just goes without.
    """

    def __init__(self, path: Path):
        self.path = path
        self.stats: dict[str, list[Any]] = self._read()
        self.changed = False

    def _read(self) -> dict[str, list[Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def matches(self, name: str, stat: os.stat_result, sha256: str) -> bool:
        return self.stats.get(name) == [*_stat_key(stat), sha256]

    def note(self, name: str, stat: os.stat_result, sha256: str) -> None:
        key = [*_stat_key(stat), sha256]
        if self.stats.get(name) != key:
            self.stats[name], self.changed = key, True

    def save(self) -> None:
        if not self.changed:
            return
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(self.stats, sort_keys=True))
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        self.changed = False


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _well_formed(name: str, expected: Any) -> bool:
    """A relative path inside the entry with an integer size and a sha256: anything else is not our manifest."""
    inside = not Path(name).is_absolute() and ".." not in Path(name).parts
    return inside and isinstance(expected, dict) and isinstance(expected.get("size"), int) \
        and isinstance(expected.get("sha256"), str)


def check_files(folder: Path, listed: dict[str, dict[str, Any]], cache: HashCache, full: bool) -> list[Drift]:
    """How the files in `folder` differ from `listed` (name -> size, sha256); empty when they match.

    `full` re-hashes every file and also reports files the manifest does not list; otherwise only files whose stat
    the cache does not vouch for are hashed.
    """
    drifts = []
    for name, expected in listed.items():
        if not _well_formed(name, expected):
            drifts.append(Drift(name, "the manifest's entry for it is malformed"))
            continue
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            drifts.append(Drift(name, "missing"))
            continue
        if stat.st_size != expected["size"]:
            drifts.append(Drift(name, f"size {stat.st_size} bytes, the manifest says {expected['size']}"))
            continue
        if not full and cache.matches(name, stat, expected["sha256"]):
            continue
        try:
            actual = sha256_file(path)
        except OSError as error:
            drifts.append(Drift(name, f"unreadable: {error.strerror or error}"))
            continue
        if actual != expected["sha256"]:
            drifts.append(Drift(name, f"sha256 {actual[:16]}..., the manifest says {expected['sha256'][:16]}..."))
        else:
            cache.note(name, stat, actual)
    if full:
        drifts += [Drift(name, "not in the manifest") for name in entry_files(folder, "manifest.json") if name not in listed]
    return drifts
