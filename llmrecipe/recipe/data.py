"""The `data` step: where documents come from, what happens to them, how they are split."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from llmrecipe.recipe.base import Section


class Source(Section):
    """Documents from local files (`path`) or from files shipped inside an installed package (`package`)."""

    path: str | None = None
    """A file, a directory, or a glob pattern; relative paths are relative to the recipe file."""
    package: str | None = None
    """An installed Python package whose shipped data files are read (no network)."""
    glob: str = "**/*"
    """Which files to take below `path` (when it is a directory) or below the package's folder."""
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    """File format; `auto` picks it from the file extension (.jsonl/.json, .parquet, anything else is text)."""
    unit: Literal["file", "paragraph", "line"] = "file"
    """For text files: one document per file, per blank-line separated paragraph, or per line."""
    text_field: str = "text"
    """For JSONL and Parquet: the column that holds the document text."""

    @model_validator(mode="after")
    def _one_origin(self) -> "Source":
        if (self.path is None) == (self.package is None):
            raise ValueError("give exactly one of `path` (local files) or `package` (an installed package)")
        return self


class Normalize(Section):
    op: Literal["normalize"] = "normalize"
    form: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normalization form applied to every document."""
    whitespace: bool = True
    """Strip trailing spaces on every line, turn CRLF into LF and collapse runs of 3+ newlines to 2."""


class FilterLength(Section):
    op: Literal["filter_length"] = "filter_length"
    min_chars: int = Field(default=0, ge=0)
    """Drop documents shorter than this many characters."""
    max_chars: int | None = Field(default=None, ge=1)
    """Drop documents longer than this many characters (no limit when unset)."""
    min_words: int = Field(default=0, ge=0)
    """Drop documents with fewer whitespace-separated words than this."""


class DedupExact(Section):
    op: Literal["dedup_exact"] = "dedup_exact"
    """Keep the first of documents whose text is byte-identical (after the ops before this one)."""


DataOp = Annotated[Union[Normalize, FilterLength, DedupExact], Field(discriminator="op")]


class Split(Section):
    """Each document lands in one split, chosen by a stable hash of its text: same text, same split."""

    val: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of documents held out for validation."""
    test: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of documents held out for the final test."""

    @model_validator(mode="after")
    def _leaves_train(self) -> "Split":
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves nothing to train on; keep it below 1")
        return self


class DataStep(Section):
    """Read, clean and split documents into Parquet files (train/val/test)."""

    kind: Literal["data"]
    sources: list[Source] = Field(min_length=1)
    """Where the documents come from; all sources are concatenated in order."""
    ops: list[DataOp] = []
    """Operations applied to every document, in the order written."""
    split: Split = Split()
    """How documents are divided into train / val / test."""
