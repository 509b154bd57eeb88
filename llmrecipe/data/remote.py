"""Source files on fsspec file systems: a source `path` with a protocol (`s3://bucket/corpus/*.jsonl`,
`gs://...`, `file:///data/...`, `memory://...`) is listed, digested and read through fsspec, so every node of a
cluster reads the same objects. The protocol's package must be installed (s3fs for s3://, gcsfs for gs://).
No polars here: `plan` uses it."""

from __future__ import annotations

from typing import BinaryIO

from llmrecipe.digests import sha256_stream
from llmrecipe.errors import RecipeError


def is_remote(path: str) -> bool:
    """Whether `path` names a file system by its protocol (`s3://...`), not a local path."""
    return "://" in path


def open_binary(path: str) -> BinaryIO:
    """The file at `path` (local, or on an fsspec file system) opened for reading bytes."""
    if not is_remote(path):
        return open(path, "rb")
    import fsspec

    return fsspec.open(path, "rb").open()


def remote_files(path: str, glob: str, where: str) -> list[tuple[str, str, int]]:
    """The files a remote source names, sorted by their path below its root: (relative name, full path, size).
    `path` is a file, a folder (then `glob` picks below it) or a glob pattern; hidden files are left out."""
    try:
        import fsspec
    except ImportError:
        raise RecipeError(f"{where}.path = '{path}' names a file system: pip install -e '.[remote]' (fsspec), plus "
                          "its package (s3fs for s3://, gcsfs for gs://)") from None

    from llmrecipe.data.locate import GLOB_CHARS, glob_regex

    try:
        fs, root = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as error:
        raise RecipeError(f"{where}.path = '{path}': {error}; install the file system's package "
                          "(s3fs for s3://, gcsfs for gs://) or fix the path") from None
    if GLOB_CHARS & set(root):
        parts = root.split("/")
        first = next(i for i, part in enumerate(parts) if GLOB_CHARS & set(part))
        root, glob = "/".join(parts[:first]), "/".join(parts[first:])
    elif fs.isfile(root):
        found = fs.info(root)
        return [(root.rsplit("/", 1)[-1], fs.unstrip_protocol(root), int(found["size"]))]
    elif not fs.isdir(root):
        raise RecipeError(f"{where}.path = '{path}': no such file or folder; check the path")
    matcher = glob_regex(glob)
    root = root.rstrip("/")
    files = []
    for name, info in sorted(fs.find(root, detail=True).items()):
        relative = name[len(root):].lstrip("/")
        if any(part.startswith(".") for part in relative.split("/")) or not matcher.fullmatch(relative):
            continue
        files.append((relative, fs.unstrip_protocol(name), int(info["size"])))
    if not files:
        raise RecipeError(f"{where}: no files match '{glob}' in {path}; check the glob")
    return files


def sha256_of(path: str) -> str:
    with open_binary(path) as stream:
        return sha256_stream(stream)
