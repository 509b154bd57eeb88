"""Content digests of the files a recipe reads, cached by file identity so a plan does not re-read them.

A 15 GB checkpoint takes about a minute to hash; `validate`, `plan` and `status` run far more often than files
change. A digest is reused while the file's (device, inode, size, mtime, ctime) are unchanged: any write through
the file system moves mtime and ctime, and a file replaced by another (a rename, a copy) has another inode or ctime.
Small files are hashed every time (that costs less than the look-up). The cache is an SQLite file under
LLMRECIPE_CACHE_DIR (default ~/.cache/llmrecipe), safe for processes planning at once; losing it costs only time.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import BinaryIO

CACHED_FROM_BYTES = 1 << 20
"""Files of at least this size have their digest cached."""


def sha256_file(path: Path) -> str:
    """The sha256 of the file's bytes, read in full."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(stream: BinaryIO) -> str:
    """The sha256 of what is left to read of a binary stream (a local file or an fsspec one)."""
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """The file's sha256, from the cache when its identity has not changed since it was last hashed."""
    status = os.stat(path)
    if status.st_size < CACHED_FROM_BYTES:
        return sha256_file(path)
    identity = (str(status.st_dev), str(status.st_ino), status.st_size, str(status.st_mtime_ns), str(status.st_ctime_ns))
    try:
        with _connect() as db:
            row = db.execute("SELECT sha256 FROM digests WHERE dev=? AND ino=? AND size=? AND mtime_ns=? AND ctime_ns=?",
                             identity).fetchone()
    except sqlite3.Error:  # an unreadable cache is only slower
        row = None
    if row is not None:
        return row[0]
    digest = sha256_file(path)
    try:
        with _connect() as db:
            db.execute("DELETE FROM digests WHERE dev=? AND ino=?", identity[:2])
            db.execute("INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?)", (*identity, digest))
    except sqlite3.Error:
        pass
    return digest


def cache_file() -> Path:
    from llmrecipe.host import cache_dir  # here, not at the top: host reads the plan's models, and every layer
    # (training's checkpoints included) imports this module

    return cache_dir() / "digests.sqlite"


def _connect() -> sqlite3.Connection:
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.execute("CREATE TABLE IF NOT EXISTS digests (dev TEXT, ino TEXT, size INTEGER, mtime_ns TEXT, ctime_ns TEXT, "
               "sha256 TEXT, PRIMARY KEY (dev, ino))")
    return db
