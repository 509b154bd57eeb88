"""Per-document cleaning ops: normalize, regex_replace, regex_filter, filter_length.

Each op takes a batch frame (id, text, source, ...) and its config and returns an `OpResult`: the frame
with its text rewritten, a drop reason per row (null keeps the row) and counters for the report. Work is
vectorized polars expressions; Python runs only on the few documents a vectorized test singled out.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import polars as pl

from llmrecipe.recipe.data import FilterLength, Normalize, RegexFilter, RegexReplace

TEXT = pl.col("text")

# A UTF-8 lead byte read as Windows-1252 followed by a continuation byte read the same way: the signature
# of mojibake (`Ã©` for `é`, `â€™` for `’`). Only documents holding it are handed to ftfy.
MOJIBAKE = r"[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]"
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
"""Control characters except tab, LF and CR (CR is handled by the whitespace cleanup)."""
MARKUP_BLOCKS = r"(?is)<!--.*?-->|<script\b.*?</script\s*>|<style\b.*?</style\s*>"
TAG = r"<[A-Za-z/!?][^<>]*>"
ENTITY = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"


@dataclass
class OpResult:
    frame: pl.DataFrame
    drop: pl.Series | None = None
    """A reason per row (String), null for rows kept; None when the op drops nothing."""
    counters: dict[str, int] = field(default_factory=dict)


def normalize(frame: pl.DataFrame, op: Normalize) -> OpResult:
    """Markup, then the character-level canon (control characters, case, Unicode form), then encoding repair,
    then whitespace. The repair runs on canonical text because mojibake can appear only once a form composes
    it (`A` + combining tilde + `©` is `Ã©` after NFC), and repaired text is put in canon again. Idempotent
    unless `strip_markup` decodes entities that spell markup."""
    counters: dict[str, int] = {}
    text = frame["text"]
    if op.strip_markup:
        text, counters["markup_stripped"] = strip_markup(text)
    text = spaced(canonical(text, op), op)
    if op.fix_encoding:
        # ftfy judges mojibake by its neighbours (`Ã©` then a no-break space reads differently from `Ã©` at the
        # end), so it sees the text as a second run would: canonical and with whitespace cleaned
        text, counters["encoding_fixed"] = fix_mojibake(text)
        if counters["encoding_fixed"]:
            text = spaced(canonical(text, op), op)
    return OpResult(frame.with_columns(text=text), counters=counters)


def spaced(text: pl.Series, op: Normalize) -> pl.Series:
    """`clean_whitespace` applied: its replacements only where a literal search (far cheaper than the regexes)
    shows they could change something, its strip everywhere."""
    if not op.whitespace:
        return text
    contains = text.str.contains
    changing = (contains("\r", literal=True) | contains(" \n", literal=True) | contains("\t\n", literal=True)
                | contains("\n\n\n", literal=True) | text.str.ends_with(" ") | text.str.ends_with("\t"))
    rows = changing.fill_null(False).arg_true()
    stripped = text.str.strip_chars()
    if rows.is_empty():
        return stripped
    cleaned = pl.select(clean_whitespace(pl.lit(text.gather(rows)))).to_series()
    return stripped.scatter(rows, cleaned)


def canonical(text: pl.Series, op: Normalize) -> pl.Series:
    if op.control_chars:
        text = replaced_where(text, CONTROL, "")
    if op.lowercase:
        text = text.str.to_lowercase()
    if op.form != "none":
        # after lower-casing: it can leave a text outside the form (`İ` -> `i̇`), and NFKC can make capitals (`ℌ`)
        text = unicode_normalized(text, op.form)
        if op.lowercase:
            text = text.str.to_lowercase()
    return text


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


def replaced_where(text: pl.Series, pattern: str, replacement: str) -> pl.Series:
    """`replace_all` run only on the texts that match: a match test is several times cheaper than a replace,
    and most texts hold no control characters at all."""
    rows = text.str.contains(pattern).fill_null(False).arg_true()
    if rows.is_empty():
        return text
    return text.clone().scatter(rows, text.gather(rows).str.replace_all(pattern, replacement))


def fix_mojibake(text: pl.Series) -> tuple[pl.Series, int]:
    """ftfy's encoding repair on the documents that show mojibake; returns the texts and how many changed."""
    import ftfy  # imported here: only this op needs it

    # mojibake is non-ASCII: the regex runs only on texts with a multi-byte character
    candidates = (text.str.len_bytes() != text.str.len_chars()).fill_null(False).arg_true()
    suspect = pl.Series([False] * len(text)).scatter(candidates, text.gather(candidates).str.contains(MOJIBAKE))
    return _rewrite_some(text, suspect, ftfy.fix_encoding)


def strip_markup(text: pl.Series) -> tuple[pl.Series, int]:
    """Tags, comments, scripts and styles removed; entities decoded (by Python's html module, on the documents
    holding one). Returns the texts and how many documents changed."""
    has_markup = text.str.contains(TAG) | text.str.contains(ENTITY) | text.str.contains("<!--", literal=True)
    stripped = text.str.replace_all(MARKUP_BLOCKS, " ").str.replace_all(TAG, " ")
    decoded, _ = _rewrite_some(stripped, stripped.str.contains(ENTITY), html.unescape)
    return decoded, int(has_markup.sum())


def _rewrite_some(text: pl.Series, which: pl.Series, rewrite) -> tuple[pl.Series, int]:
    rows = which.fill_null(False).arg_true()
    if rows.is_empty():
        return text, 0
    before = text.gather(rows)
    after = pl.Series([rewrite(t) for t in before.to_list()], dtype=pl.String)
    changed = int((before != after).sum())
    return text.clone().scatter(rows, after), changed


def regex_replace(frame: pl.DataFrame, op: RegexReplace) -> OpResult:
    matches = frame["text"].str.count_matches(op.pattern)
    rewritten = frame.with_columns(text=TEXT.str.replace_all(op.pattern, op.replacement))
    return OpResult(rewritten, counters={"replacements": int(matches.sum()), "docs_changed": int((matches > 0).sum())})


def regex_filter(frame: pl.DataFrame, op: RegexFilter) -> OpResult:
    matches = frame["text"].str.contains(op.pattern)
    dropped = ~matches if op.keep == "matching" else matches
    reason = "not_matching" if op.keep == "matching" else "matching"
    return OpResult(frame, drop=reasons(dropped, reason))


def filter_length(frame: pl.DataFrame, op: FilterLength) -> OpResult:
    text = frame["text"]
    chars = text.str.len_chars()
    rules = [("min_chars", chars < op.min_chars)]
    if op.max_chars is not None:
        rules.append(("max_chars", chars > op.max_chars))
    if op.min_words or op.max_words is not None:
        words = text.str.count_matches(r"\S+")
        rules.append(("min_words", words < op.min_words))
        if op.max_words is not None:
            rules.append(("max_words", words > op.max_words))
    if op.min_lines:
        rules.append(("min_lines", text.str.count_matches(r"(?m)^.*\S.*$") < op.min_lines))
    return OpResult(frame, drop=first_reason(rules))


def reasons(dropped: pl.Series, reason: str) -> pl.Series:
    """A drop-reason column from one boolean rule."""
    return first_reason([(reason, dropped)])


def first_reason(rules: list[tuple[str, pl.Series]]) -> pl.Series:
    """Per row, the name of the first rule that drops it (null if none does): one reason per dropped document,
    so the per-reason counts add up to the documents dropped."""
    if not rules:
        return pl.Series("drop", [], dtype=pl.String)
    frame = pl.DataFrame({f"r{k}": mask.fill_null(False) for k, (_, mask) in enumerate(rules)})
    expr = pl.when(pl.col("r0")).then(pl.lit(rules[0][0]))
    for k, (name, _) in enumerate(rules[1:], start=1):
        expr = expr.when(pl.col(f"r{k}")).then(pl.lit(name))
    return frame.select(drop=expr.otherwise(pl.lit(None, dtype=pl.String)))["drop"]
