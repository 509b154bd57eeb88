"""Data operations: each takes a frame of documents (id, text, source) and its config, returns the new frame.

Every op is a vectorized polars expression; no Python runs per document.
"""

from __future__ import annotations

from typing import Any, Callable

import polars as pl

from llmrecipe.recipe.data import DedupExact, FilterLength, Normalize

TEXT = pl.col("text")


def normalize(frame: pl.DataFrame, op: Normalize) -> pl.DataFrame:
    """Unicode form first, whitespace second: NFKC turns e.g. no-break spaces into plain ones, which the
    whitespace cleanup must then see at line ends."""
    if op.form != "none":
        frame = frame.with_columns(text=unicode_normalized(frame["text"], op.form))
    return frame.with_columns(text=clean_whitespace(TEXT)) if op.whitespace else frame


def unicode_normalized(text: pl.Series, form: str) -> pl.Series:
    """`str.normalize` on the documents that need it: ASCII text is already in every normal form, and polars
    does no such quick check itself (normalizing ASCII costs as much as any other text)."""
    needs_normalizing = (text.str.len_bytes() != text.str.len_chars()).arg_true()
    if needs_normalizing.is_empty():
        return text
    normalized = text.gather(needs_normalizing).str.normalize(form)
    return text.clone().scatter(needs_normalizing, normalized)


def clean_whitespace(text: pl.Expr) -> pl.Expr:
    """LF line ends, no trailing spaces or tabs on any line, at most one blank line in a row, no blank ends."""
    return (
        text.str.replace_all("\r\n", "\n", literal=True)
        .str.replace_all("\r", "\n", literal=True)
        .str.replace_all(r"(?m)[ \t]+$", "")
        .str.replace_all(r"\n{3,}", "\n\n")
        .str.strip_chars()
    )


def filter_length(frame: pl.DataFrame, op: FilterLength) -> pl.DataFrame:
    keep = TEXT.str.len_chars() >= op.min_chars
    if op.max_chars is not None:
        keep &= TEXT.str.len_chars() <= op.max_chars
    if op.min_words:
        keep &= TEXT.str.count_matches(r"\S+") >= op.min_words
    return frame.filter(keep)


def dedup_exact(frame: pl.DataFrame, op: DedupExact) -> pl.DataFrame:
    """Keep the first document of each distinct text; the survivors stay in their original order."""
    return frame.filter(TEXT.is_first_distinct())


OPS: dict[str, Callable[[pl.DataFrame, Any], pl.DataFrame]] = {
    "normalize": normalize,
    "filter_length": filter_length,
    "dedup_exact": dedup_exact,
}
"""Op name (the `op` key in the recipe) -> function; a test keeps it in sync with the recipe's DataOp union."""
