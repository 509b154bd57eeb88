"""One line for a workdir that cannot be written: which folder, how much space is free, what was kept.

A full disk reaches us in several costumes: an OSError with errno ENOSPC or EDQUOT from Python's own writes,
and, from libraries that write in Rust or C++ (safetensors, tokenizers, polars), an exception of their own type
whose text carries "os error 28" or "No space left on device". A read-only folder is EROFS, or EACCES/EPERM
where permissions forbid writing.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
FULL_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def storage_problem(error: BaseException) -> str | None:
    """'full' or 'read-only' when `error` (or an exception it was raised from) is one of those; else None."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in FULL:
            return "full"
        if isinstance(error, OSError) and error.errno in READ_ONLY:
            return "read-only"
        if any(text in str(error).lower() for text in FULL_TEXTS):
            return "full"
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def what_failed(error: BaseException, otherwise: str) -> str:
    """`writing PATH` when the error names the file; else `otherwise` (what was going on)."""
    filename = getattr(error, "filename", None)
    return f"writing {filename}" if isinstance(filename, (str, Path)) and filename else otherwise


def free_space(path: Path) -> str:
    """The free space of the file system that holds `path` (or its nearest existing parent), for people."""
    for folder in (path, *path.parents):
        try:
            return human_bytes(shutil.disk_usage(folder).free)
        except OSError:
            continue
    return "an unknown amount"


def describe(problem: str, what: str, folder: Path, kept: str) -> str:
    """The line a user sees: what could not be written, the folder's free space, what is kept, what to do."""
    if problem == "read-only":
        return (f"cannot write ({what}): {folder} is read-only or not writable by this user; kept: {kept}; "
                "run with a writable workdir (--workdir); status, plan and generate only read and work as they are")
    return (f"no space left on device ({what}): {free_space(folder)} free in {folder}; kept: {kept}; "
            "free some space and run the same command to continue")


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
