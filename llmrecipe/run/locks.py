"""Exclusive locks on files under `<workdir>/locks/` that name their holder.

flock is released by the kernel when its holder dies, even by SIGKILL, so a lock left by a killed run is free
again at once: nothing to clean up, nothing to time out. The file itself says who holds it (pid, host, start
time, run), for the message of whoever finds it taken. A holder removes the file before letting go; a process
that locked a file someone removed meanwhile sees a different inode under the name and tries again, so two
holders never both believe they own one name.

Two locks use it: one per recipe (by its [run] name) in a workdir, which keeps a second `llmrecipe run` of the
same recipe out, and one per store entry, held while the entry is computed, so that two recipes sharing a store
compute a step they both need once: the second waits, then finds it committed.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any, Callable


class LockHeld(Exception):
    """The lock is taken; `holder` describes who holds it."""

    def __init__(self, holder: str):
        self.holder = holder
        super().__init__(holder)


class FileLock:
    def __init__(self, path: Path, about: dict[str, Any] | None = None):
        self.path = path
        self.about = about or {}
        """What the holder tells others besides pid, host and start time (its run id, the step it computes)."""
        self._fd: int | None = None

    def acquire(self, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> "FileLock":
        """Take the lock. Held by another process: raise LockHeld, or with `wait` call `on_wait(holder)` once and
        block until it is free."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if not _try_flock(fd):
                    holder = describe_holder(_read(fd))
                    if not wait:
                        raise LockHeld(holder)
                    if on_wait is not None:
                        on_wait(holder)
                        on_wait = None
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            if _still_named(fd, self.path):
                break
            os.close(fd)  # the previous holder removed this file while we waited for it: lock the current one
        self._fd = fd
        _write(fd, {"pid": os.getpid(), "host": platform.node(),
                    "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), **self.about})
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:  # a read-only or vanished folder: the lock is released all the same
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if someone holds it."""
        try:
            self.acquire()
        except LockHeld:
            return False
        return True

    def __enter__(self) -> "FileLock":
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_name(text: str) -> str:
    """A file name for any text (a recipe name may hold characters a path must not): readable, and unique by digest."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:48]
    return f"{readable}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def describe_holder(about: dict[str, Any]) -> str:
    if not about.get("pid"):
        return "another process"
    text = f"pid {about['pid']} on {about.get('host', '?')}, started {about.get('started', '?')}"
    return text + (f" (run {about['run_id']})" if about.get("run_id") else "")


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _still_named(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(fd: int, about: dict[str, Any]) -> None:
    data = json.dumps(about).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as error:  # who holds the lock is a courtesy: a full disk must not stop the run for it
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
