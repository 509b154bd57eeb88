"""Read the documents of one data source from its files into a frame of (id, text, source)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import polars as pl

from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import Source

DOCUMENT_SCHEMA = {"id": pl.String, "text": pl.String, "source": pl.Int32}
FILE_SCHEMA = {"file": pl.Int64, "id": pl.String, "text": pl.String}
"""Documents while a source is read: `file` is the file's position in the source, kept to restore file order."""

EXTENSION_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

# A paragraph is a run of lines that each hold something other than whitespace; Rust's regex engine
# matches it in linear time, so splitting stays vectorized however large the file.
PARAGRAPH = r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*"


def empty_documents() -> pl.DataFrame:
    return pl.DataFrame(schema=DOCUMENT_SCHEMA)


def file_format(source: Source, name: str) -> str:
    """The format a file is read as: the source's own, or for `auto` the one its extension names."""
    if source.format != "auto":
        return source.format
    return EXTENSION_FORMATS.get(Path(name).suffix.lower(), "text")


def read_source(source: Source, index: int, files: list[ExternalFile]) -> pl.DataFrame:
    """Every document of one source, in file order, then in order inside each file."""
    texts: list[tuple[int, str, str]] = []
    tables: list[pl.DataFrame] = []
    for position, file in enumerate(files):
        content = verified_bytes(file)
        fmt = file_format(source, file.name)
        if fmt == "text":
            texts.append((position, file.name, decode_text(content)))
        else:
            rows = read_table(content, fmt, file, source.text_field)
            tables.append(rows.select(file=pl.lit(position, dtype=pl.Int64), id="id", text="text"))
    # All text files are cut into units in one vectorized pass; sorting by file position afterwards
    # puts their documents back in file order among the tables' (the sort is stable).
    documents = pl.concat([text_documents(texts, source.unit), *tables], how="vertical")
    return (
        documents.sort("file", maintain_order=True)
        .with_columns(id=pl.lit(f"{index}:") + pl.col("id"), source=pl.lit(index, dtype=pl.Int32))
        .select(DOCUMENT_SCHEMA.keys())
    )


def verified_bytes(file: ExternalFile) -> bytes:
    """The file's bytes, checked against the digest the plan fingerprinted, so what is read is what was planned."""
    try:
        content = Path(file.path).read_bytes()
    except OSError as error:
        raise StepError(f"cannot read source file {file.path}: {error.strerror}; restore it or re-plan") from error
    if hashlib.sha256(content).hexdigest() != file.sha256:
        raise StepError(
            f"source file {file.path} changed after the plan was made; run again to re-plan with its new content"
        )
    return content


def decode_text(content: bytes) -> str:
    # utf-8-sig drops a leading byte-order mark, which would otherwise start the first document.
    return content.decode("utf-8-sig", errors="replace")


def text_documents(texts: list[tuple[int, str, str]], unit: str) -> pl.DataFrame:
    """Text files (position, name, text) cut into documents by `unit`; units in a file are numbered `#k` from 0."""
    columns = dict(zip(FILE_SCHEMA, zip(*texts))) if texts else {}
    files = pl.DataFrame(columns, schema=FILE_SCHEMA)
    if unit == "file":
        return files
    if unit == "paragraph":
        units = files.with_columns(pl.col("text").str.extract_all(PARAGRAPH)).explode("text")
        units = units.with_columns(pl.col("text").str.strip_chars())
    else:
        units = files.with_columns(pl.col("text").str.split("\n")).explode("text")
        units = units.with_columns(pl.col("text").str.strip_suffix("\r"))
    units = units.filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != ""))
    unit_number = pl.int_range(pl.len()).over("file").cast(pl.String)
    return units.with_columns(id=pl.col("id") + "#" + unit_number)


def read_table(content: bytes, fmt: str, file: ExternalFile, text_field: str) -> pl.DataFrame:
    """The `text_field` column of a JSONL or Parquet file, one document per row, numbered `#row`."""
    text = text_column(content, fmt, file, text_field)
    if text.dtype not in (pl.String, pl.Null):
        raise StepError(
            f"{file.path}: column '{text_field}' holds {text.dtype}, not text; point text_field at a text column"
        )
    row_number = pl.int_range(pl.len()).cast(pl.String)
    return (
        pl.DataFrame({"text": text.cast(pl.String)})
        .select(id=pl.lit(f"{file.name}#") + row_number, text="text")
        # A row without text is no document; the row numbers of the others stay as in the file.
        .filter(pl.col("text").is_not_null())
    )


def text_column(content: bytes, fmt: str, file: ExternalFile, text_field: str) -> pl.Series:
    if fmt == "jsonl" and not content.strip():  # polars cannot infer a schema from no lines at all
        return pl.Series(text_field, [], dtype=pl.String)
    try:
        if fmt == "jsonl":
            # Infer from every line: a field that first appears after line 100 must not look missing.
            table = pl.read_ndjson(io.BytesIO(content), infer_schema_length=None)
            columns = table.columns
        else:  # Parquet knows its columns up front: read only the one that holds the text.
            columns = list(pl.read_parquet_schema(io.BytesIO(content)))
            table = pl.read_parquet(io.BytesIO(content), columns=[text_field]) if text_field in columns else None
    except pl.exceptions.PolarsError as error:
        expected = "one JSON object per line" if fmt == "jsonl" else "a Parquet file"
        raise StepError(f"cannot read {file.path} as {fmt} (expected {expected}): {error}") from error
    if text_field not in columns:
        raise StepError(
            f"{file.path} has no column '{text_field}' (it has: {', '.join(columns) or 'none'}); "
            "set text_field on the source to the column that holds the text"
        )
    return table[text_field]
