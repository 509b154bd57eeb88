"""Read the documents of one data source, in batches, into frames of (id, text, source, metadata...).

Files are streamed: line- and paragraph-unit text and JSONL are cut into blocks of about `block_bytes` at
record boundaries, so a source far larger than memory is read with bounded memory. Each file's sha256 is
computed while it is read and checked against the plan's at its end.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO, Iterator

import polars as pl

from llmrecipe.data.decode import decode
from llmrecipe.data.fetch import fetch
from llmrecipe.data.ranges import ByteRange, range_pieces
from llmrecipe.data.remote import open_binary
from llmrecipe.data.formats import file_format, missing_column, split_compression
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import Source

BLOCK_BYTES = 16 << 20
BAD_SAMPLES = 5
"""Bad records of each kind kept (file, line, excerpt) in the report."""
SNIFF_BYTES = 8192
"""How much of a text or JSONL file is looked at to tell binary content from text."""
MAX_BINARY_SHARE = 0.3
"""A file whose first SNIFF_BYTES are more than this share of NUL/control bytes and bytes that are not UTF-8 is
binary (random bytes: about 0.55; Latin-1 or Windows-1252 prose, which decoding repairs: a few percent)."""

# A paragraph is a run of lines that each hold something other than whitespace; Rust's regex engine
# matches it in linear time, so splitting stays vectorized however large the block.
PARAGRAPH = r"[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*"


def document_schema(metadata: list[str]) -> dict[str, pl.DataType]:
    return {"id": pl.String, "text": pl.String, "source": pl.Int32, **{name: pl.String for name in metadata}}


@dataclass
class SourceLog:
    """What reading one source found: the numbers the report shows for it."""

    source: int
    files: int = 0
    docs: int = 0
    chars: int = 0
    bad_records: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    bad_samples: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, saved: dict) -> "SourceLog":
        """The log `as_dict` described."""
        return cls(saved["source"], saved["files"], saved["docs"], saved["chars"], Counter(saved["bad_records"]),
                   Counter(saved["repaired"]), saved["bad_samples"])

    def as_dict(self) -> dict:
        return {"source": self.source, "files": self.files, "docs": self.docs, "chars": self.chars,
                "bad_records": dict(self.bad_records), "repaired": dict(self.repaired), "bad_samples": self.bad_samples}

    def add_sample(self, sample: dict) -> None:
        """Keep a bad record for the report, up to BAD_SAMPLES of each kind."""
        if sum(1 for kept in self.bad_samples if kept["kind"] == sample["kind"]) < BAD_SAMPLES:
            self.bad_samples.append(sample)


@dataclass
class Reader:
    """Reads one source's files under the step's bad-record policy."""

    source: Source
    index: int
    policy: str
    metadata: list[str]
    """Metadata columns of the whole step (every source's frames carry them all, null where absent)."""
    downloads_dir: Path | None = None
    block_bytes: int = BLOCK_BYTES
    span: ByteRange | None = None
    """Read only this range of the one file given (`llmrecipe.data.ranges`)."""

    def __post_init__(self) -> None:
        self.log = SourceLog(self.index)

    def documents(self, files: list[ExternalFile]) -> Iterator[pl.DataFrame]:
        """Frames of documents in file order, then in order inside each file; stops after `max_docs`."""
        left = self.source.max_docs
        for file in files:
            self.log.files += self.span is None or self.span.start == 0  # a file's ranges count it once
            for frame in self._file_documents(file):
                if left is not None:
                    frame = frame.head(left)
                    left -= len(frame)
                if len(frame):
                    self.log.docs += len(frame)
                    self.log.chars += int(frame["text"].str.len_chars().sum())
                    yield self._finish(frame)
                if left == 0:
                    return

    def bad(self, kind: str, file: ExternalFile, where: str, excerpt: str) -> None:
        """A record that cannot be read: fail, or count it and keep a few for the report."""
        if self.policy == "fail":
            raise StepError(
                f"{file.path}{where}: bad record ({kind}: {excerpt[:120]!r}); fix the file, or set "
                "on_bad_record = \"skip\" on the step to leave such records out (they are counted)"
            )
        self.log.bad_records[kind] += 1
        self.log.add_sample({"kind": kind, "file": file.name, "where": where.lstrip(":"), "excerpt": excerpt[:200]})

    def _finish(self, frame: pl.DataFrame) -> pl.DataFrame:
        columns = {name: pl.col(name) if name in frame.columns else pl.lit(None) for name in self.metadata}
        return frame.select(
            id=pl.lit(f"{self.index}:") + pl.col("id"),
            text=pl.col("text").cast(pl.String),
            source=pl.lit(self.index, dtype=pl.Int32),
            **{name: expr.cast(pl.String) for name, expr in columns.items()},
        )

    def _file_documents(self, file: ExternalFile) -> Iterator[pl.DataFrame]:
        path = str(fetch(file.path, file.sha256, self._downloads())) if self.source.url else file.path
        _, compression = split_compression(file.name)
        fmt = file_format(self.source.format, file.name)
        raw = opened(path)
        if self.span is not None:  # the file's sha256, binary and empty checks were made with its ranges
            with raw:
                yield from self._jsonl(blocks(range_pieces(raw, self.span, self.block_bytes), b"\n",
                                              tail=self.span.last), file)
            return
        with raw:
            hashing = HashingReader(raw)
            stream = decompressed(hashing, compression)
            try:
                yield from self._parse(stream, fmt, file)
            except corrupt_stream_errors() as error:
                self.bad("corrupt_archive", file, "", f"{compression} stream: {error}")
            hashing.drain()
        if not self.source.url and hashing.hexdigest() != file.sha256:
            raise changed_after_plan(file.path)

    def _downloads(self) -> Path:
        if self.downloads_dir is None:
            raise StepError("a url source needs a download cache folder; run the step through the scheduler")
        return self.downloads_dir

    def _parse(self, stream: BinaryIO, fmt: str, file: ExternalFile) -> Iterator[pl.DataFrame]:
        if fmt == "text" and self.source.unit == "file":
            content = stream.read()
            if not content.strip():
                self.bad("empty_file", file, "", "")
                return
            if looks_binary(content[:SNIFF_BYTES]):
                self.bad("binary_file", file, "", binary_excerpt(content))
                return
            yield pl.DataFrame({"id": [file.name], "text": [decode(content, self.log.repaired)]})
        elif fmt in ("text", "jsonl"):
            separator = b"\n\n" if fmt == "text" and self.source.unit == "paragraph" else b"\n"
            chunks = blocks(iter(lambda: stream.read(self.block_bytes), b""), separator)
            first = next(chunks, b"")
            if looks_binary(first[:SNIFF_BYTES]):
                self.bad("binary_file", file, "", binary_excerpt(first))
                return
            chunks = chain([first], chunks)
            yield from (self._text_units(chunks, file) if fmt == "text" else self._jsonl(chunks, file))
        else:
            content = stream.read()
            if not content.strip():
                self.bad("empty_file", file, "", "")
                return
            yield from self._table(content, fmt, file)

    def _text_units(self, chunks: Iterator[bytes], file: ExternalFile) -> Iterator[pl.DataFrame]:
        numbered = 0
        for chunk in chunks:
            text = pl.Series("text", [decode(chunk, self.log.repaired)])
            if self.source.unit == "paragraph":
                units = text.str.extract_all(PARAGRAPH).explode().str.strip_chars()
            else:
                units = text.str.split("\n").explode().str.strip_suffix("\r")
            units = units.filter(units.is_not_null() & (units.str.strip_chars() != ""))
            numbers = pl.int_range(numbered, numbered + len(units), eager=True).cast(pl.String)
            numbered += len(units)
            if len(units):
                yield pl.DataFrame({"id": f"{file.name}#" + numbers, "text": units})
        if numbered == 0:
            self.bad("empty_file", file, "", "")

    def _jsonl(self, chunks: Iterator[bytes], file: ExternalFile) -> Iterator[pl.DataFrame]:
        first_line = 0 if self.span is None else self.span.first_line
        any_line = False
        for chunk in chunks:
            lines = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
            if chunk and not chunk.isspace():  # not all whitespace (without copying the chunk as strip() would)
                any_line = True
                rows = self._json_rows(chunk, file, first_line)
                if rows is not None:
                    yield from self._rows_to_documents(rows, file)
            first_line += lines
        if not any_line and self.span is None:
            self.bad("empty_file", file, "", "")

    def _json_rows(self, chunk: bytes, file: ExternalFile, first_line: int) -> pl.DataFrame | None:
        """The chunk's JSON objects with their line numbers; malformed lines are bad records (slow path only
        for chunks that hold one)."""
        text = decode(chunk, self.log.repaired).encode()
        # polars turns a number, list or object in a column of strings into its JSON text: a chunk where the text
        # field holds anything but a string takes the line-by-line path, which counts those lines as bad records
        if not self._non_string_text(text):
            try:
                table = pl.read_ndjson(io.BytesIO(text), infer_schema_length=None)
                return table.with_columns(_line=pl.int_range(first_line, first_line + len(table)))
            except pl.exceptions.PolarsError:
                pass
        rows, numbers = [], []
        for offset, line in enumerate(text.split(b"\n")):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                self.bad("malformed_json", file, f":{first_line + offset + 1}", line[:200].decode(errors="replace"))
                continue
            value = row.get(self.source.text_field)
            if value is not None and not isinstance(value, str):
                self.bad("text_not_string", file, f":{first_line + offset + 1}",
                         f"'{self.source.text_field}' holds {type(value).__name__}: {json.dumps(value)[:120]}")
                continue
            rows.append(self._flat(row))
            numbers.append(first_line + offset)
        if not rows:
            return None
        return pl.DataFrame(rows, infer_schema_length=None, strict=False).with_columns(_line=pl.Series(numbers))

    def _non_string_text(self, chunk: bytes) -> bool:
        """Whether some line's text field may hold a value other than a string or null (a regex over the chunk:
        the key, as written by any JSON encoder, then a value that does not start with a quote)."""
        key = re.escape(json.dumps(self.source.text_field))
        pattern = rf'(?:^|[{{,])\s*{key}\s*:\s*[^"\sn]'
        return bool(pl.Series([chunk], dtype=pl.Binary).cast(pl.String, strict=False).str.contains(pattern).any())

    def _flat(self, row: dict) -> dict:
        """A parsed JSON object with every value but the text as a string (or null), so lines whose values
        differ in type still make one table; the text keeps its type for the check that it is text."""
        return {key: value if key == self.source.text_field or value is None or isinstance(value, str)
                else json.dumps(value) for key, value in row.items()}

    def _rows_to_documents(self, rows: pl.DataFrame, file: ExternalFile) -> Iterator[pl.DataFrame]:
        """A table's rows as documents: the text column checked, ids from `id_field` or `file#row`."""
        field_name = self.source.text_field
        if field_name not in rows.columns:
            raise StepError(missing_column(file.path, field_name, [c for c in rows.columns if c != "_line"]))
        text = rows[field_name]
        if text.dtype not in (pl.String, pl.Null):
            first = rows["_line"][0] + 1
            self.bad("text_not_string", file, f":{first}", f"column '{field_name}' holds {text.dtype}, not text")
            return
        missing = rows.filter(pl.col(field_name).is_null())
        for line in missing["_line"].head(BAD_SAMPLES).to_list():
            self.bad("missing_text", file, f":{line + 1}", "")
        if len(missing) > BAD_SAMPLES:
            self.log.bad_records["missing_text"] += len(missing) - BAD_SAMPLES
        rows = rows.filter(pl.col(field_name).is_not_null())
        ids = (pl.col(self.source.id_field).cast(pl.String) if self.source.id_field in rows.columns
               else pl.lit(f"{file.name}#") + pl.col("_line").cast(pl.String))
        keep = [name for name in self.metadata if name in rows.columns]
        text, column = pl.col(field_name), rows[field_name]
        if column.dtype == pl.String and column.str.contains("\x00", literal=True).any():  # a JSON \u0000: rare
            text = text.str.replace_all("\x00", "", literal=True)
        yield rows.select(id=ids, text=text, *keep)

    def _table(self, content: bytes, fmt: str, file: ExternalFile) -> Iterator[pl.DataFrame]:
        try:
            if fmt == "parquet":
                table = pl.read_parquet(io.BytesIO(content))
            else:
                table = pl.read_csv(io.BytesIO(content), infer_schema_length=0)  # every column as text
        except pl.exceptions.PolarsError as error:
            self.bad(f"malformed_{fmt}", file, "", str(error))
            return
        yield from self._rows_to_documents(table.with_columns(_line=pl.int_range(pl.len())), file)


def opened(path: str) -> BinaryIO:
    try:
        return open_binary(path)
    except OSError as error:
        raise StepError(f"cannot read source file {path}: {error.strerror}; restore it or re-plan") from error


def changed_after_plan(path: str) -> StepError:
    return StepError(f"source file {path} changed after the plan was made; run again to re-plan with its new content")


def looks_binary(sample: bytes) -> bool:
    """Whether the start of a file is binary data rather than text (see MAX_BINARY_SHARE)."""
    if not sample:
        return False
    control = sum(sample.count(bytes([b])) for b in BINARY_CONTROLS)
    not_utf8 = len(sample) - len(sample.decode("utf-8", errors="ignore").encode())
    return (control + not_utf8) / len(sample) > MAX_BINARY_SHARE


BINARY_CONTROLS = [b for b in range(32) if b not in (9, 10, 12, 13, 27)]
"""Bytes that text files hardly hold: C0 controls except tab, newline, form feed, carriage return and escape."""


def binary_excerpt(content: bytes) -> str:
    return f"binary content (starts {content[:16].hex(' ')}); give text files, or narrow the source's glob"


def corrupt_stream_errors() -> tuple[type[Exception], ...]:
    """What a decompressor raises on damaged data (gzip: OSError/EOFError; zstandard its own error)."""
    try:
        import zstandard
    except ImportError:
        return (OSError, EOFError)
    return (OSError, EOFError, zstandard.ZstdError)


class HashingReader(io.RawIOBase):
    """A file wrapper that digests every byte read through it, so one pass both reads and verifies."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        return n

    def drain(self) -> None:
        """Digest whatever the parser left unread (e.g. after a corrupt archive)."""
        while chunk := self.raw.read(1 << 20):
            self.digest.update(chunk)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def decompressed(stream: io.RawIOBase, compression: str | None) -> BinaryIO:
    buffered = io.BufferedReader(stream, 1 << 20)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=buffered)
    if compression == "zstd":
        import zstandard  # imported here: only .zst sources need it

        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    return buffered


def blocks(pieces: Iterator[bytes], separator: bytes, tail: bool = True) -> Iterator[bytes]:
    """The bytes of `pieces` regrouped to end just after a `separator`: each block is what follows the previous
    one up to the last separator of the piece read so far. `tail`: whether the bytes after the last separator
    come last (false for a byte range that leaves them to the next)."""
    rest = b""
    for chunk in pieces:
        data = rest + chunk
        cut = data.rfind(separator)
        if cut < 0:
            rest = data  # no boundary yet (one huge record): keep reading
            continue
        yield data[: cut + len(separator)]
        rest = data[cut + len(separator) :]
    if rest and tail:
        yield rest
