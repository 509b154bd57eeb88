"""How a source file is read, from its name and the recipe's `format`: no polars here, so `validate` can ask."""

from __future__ import annotations

from pathlib import Path

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}


def split_compression(name: str) -> tuple[str, str | None]:
    suffix = Path(name).suffix.lower()
    if suffix in COMPRESSIONS:
        return name[: -len(suffix)], COMPRESSIONS[suffix]
    return name, None


def file_format(declared: str, name: str) -> str:
    """`text`, `jsonl`, `parquet` or `csv`: the recipe's `format`, or with `auto` the extension under any
    compression suffix (anything unknown is text)."""
    if declared != "auto":
        return declared
    stem, _ = split_compression(name)
    return EXTENSION_FORMATS.get(Path(stem).suffix.lower(), "text")


def missing_column(path: str, field: str, columns: list[str]) -> str:
    """The message for a table or JSONL file without the source's text column (the same at plan and run time)."""
    return (f"{path} has no column '{field}' (it has: {', '.join(columns) or 'none'}); "
            "set text_field on the source to the column that holds the text")
