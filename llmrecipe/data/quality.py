"""The `quality` op: Gopher quality and repetition rules (Rae et al. 2021, appendix A), vectorized per batch.

Cheap per-document statistics come from polars string expressions. Repetition rules work on the words
of all documents at once: each word is hashed once, word n-grams are hashes combined in numpy, and
"does this n-gram repeat inside its document" is one hash-set pass over (document, n-gram) keys. Only
documents that pass the cheap rules are examined for repetition.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from llmrecipe.data.clean import OpResult, first_reason
from llmrecipe.data.hashing import xxh64
from llmrecipe.data.read import PARAGRAPH
from llmrecipe.data.words import WordSet, hash_words, split_words
from llmrecipe.recipe.data import Quality

BULLET_START = r"^[ \t]*[•‣⁃◦▪▫●○■□\-\*]"
BULLETS = r"(?m)" + BULLET_START
ELLIPSIS_LINES = r"(?m)(?:\.\.\.|…)[ \t]*$"
NONEMPTY_LINES = r"(?m)^.*\S.*$"
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
STOP_FORMS = WordSet([form for word in STOP_WORDS for form in (word, word.title(), word.upper())])
"""The stop words in lower, Title and UPPER case, grouped by word (three forms each)."""
MIX = np.uint64(0x9E3779B97F4A7C15)
DOC_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def quality(frame: pl.DataFrame, op: Quality) -> OpResult:
    text = frame["text"]
    words = Words.of(text)
    drop = first_reason(gopher_rules(text, words, op))
    survivors = drop.is_null().arg_true()
    if len(survivors) * 2 > len(text):
        # most pass: the rules are per document, so run them on all and read the survivors' verdicts (cheaper
        # than gathering the survivors' words)
        repeated = [(name, rule.gather(survivors)) for name, rule in repetition_rules(text, words, op)]
    elif len(survivors):
        repeated = repetition_rules(text.gather(survivors), words.subset(survivors.to_numpy()), op)
    else:
        repeated = []
    if repeated:
        drop = drop.scatter(survivors, first_reason(repeated))
    return OpResult(frame, drop=drop)


def on(op: Quality, rule: str) -> bool:
    return rule not in op.off


def gopher_rules(text: pl.Series, words: "Words", op: Quality) -> list[tuple[str, pl.Series]]:
    stats = pl.DataFrame({"text": text}).select(
        symbols=pl.col("text").str.count_matches("#", literal=True) + pl.col("text").str.count_matches("...", literal=True)
        + pl.col("text").str.count_matches("…", literal=True),
        ellipsis_lines=pl.col("text").str.count_matches(ELLIPSIS_LINES),
    ).with_columns(lines=line_counts(text, NONEMPTY_LINES, r"\S"), bullets=line_counts(text, BULLETS, BULLET_START))
    n_words = np.bincount(words.doc, minlength=words.n_docs).astype(np.float64)
    # A ratio over zero words or lines counts as 0 (no evidence), leaving such texts to min_words.
    with np.errstate(invalid="ignore", divide="ignore"):
        def per_word(counts: np.ndarray) -> pl.Series:
            return pl.Series(np.nan_to_num(counts / n_words))

        def per_line(column: str) -> pl.Series:
            return pl.Series(np.nan_to_num(stats[column].to_numpy() / stats["lines"].to_numpy()))

        mean_length = per_word(words.total)
        candidates = [
            ("min_words", lambda: pl.Series(n_words < op.min_words)),
            ("max_words", lambda: pl.Series(n_words > op.max_words)),
            ("min_mean_word_length", lambda: mean_length < op.min_mean_word_length),
            ("max_mean_word_length", lambda: mean_length > op.max_mean_word_length),
            ("max_symbol_word_ratio", lambda: per_word(stats["symbols"].to_numpy()) > op.max_symbol_word_ratio),
            ("max_bullet_lines", lambda: per_line("bullets") > op.max_bullet_lines),
            ("max_ellipsis_lines", lambda: per_line("ellipsis_lines") > op.max_ellipsis_lines),
            ("min_alpha_words", lambda: per_word(words.per_doc(words.alphabetic())) < op.min_alpha_words),
            ("min_stop_words", lambda: pl.Series(words.distinct_stop_words() < op.min_stop_words)),
        ]
        return [(name, rule()) for name, rule in candidates if on(op, name)]


def line_counts(text: pl.Series, per_line: str, one_line: str) -> pl.Series:
    """How many lines of each text match the multi-line pattern `per_line`. A text without a line break
    has one line, which matches iff `one_line` does: a search that stops early, where `per_line` scans every
    character of the text (most documents are one paragraph)."""
    counts = text.str.contains(one_line).cast(pl.UInt32)
    several = text.str.contains("\n", literal=True).arg_true()
    if len(several):
        counts = counts.scatter(several, text.gather(several).str.count_matches(per_line))
    return counts


def repetition_rules(text: pl.Series, words: "Words", op: Quality) -> list[tuple[str, pl.Series]]:
    rules = []
    for unit in ("line", "paragraph"):
        share_name, chars_name = f"max_duplicate_{unit}s", f"max_duplicate_{unit}_chars"
        if on(op, share_name) or on(op, chars_name):
            share, char_share = np.zeros(len(text)), np.zeros(len(text))
            # a document of one piece repeats nothing: split only those with a line break / blank line
            several = text.str.contains("\n" if unit == "line" else "\n\n", literal=True).arg_true().to_numpy()
            if len(several):
                share[several], char_share[several] = duplicate_pieces(text.gather(several), unit)
            if on(op, share_name):
                rules.append((share_name, pl.Series(share > getattr(op, share_name))))
            if on(op, chars_name):
                rules.append((chars_name, pl.Series(char_share > getattr(op, chars_name))))
    if on(op, "max_top_ngram_chars"):
        for n, limit in sorted(op.max_top_ngram_chars.items()):
            rules.append((f"max_top_{n}gram_chars", pl.Series(words.top_ngram_share(n) > limit)))
    if on(op, "max_duplicate_ngram_chars"):
        for n, limit in sorted(op.max_duplicate_ngram_chars.items()):
            rules.append((f"max_duplicate_{n}gram_chars", pl.Series(words.duplicate_ngram_share(n) > limit)))
    return rules


def duplicate_pieces(text: pl.Series, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Per document: the share of its pieces (lines or paragraphs) that repeat an earlier piece of the same
    document, and the share of characters in those repeats."""
    pieces = (
        pl.DataFrame({"text": text})
        .with_row_index("doc")
        .select("doc", piece=pl.col("text").str.split("\n") if unit == "line" else pl.col("text").str.extract_all(PARAGRAPH))
        .explode("piece")
        .with_columns(pl.col("piece").str.strip_chars())
        .filter(pl.col("piece").is_not_null() & (pl.col("piece") != ""))
    )
    doc = pieces["doc"].to_numpy().astype(np.int64)
    key = xxh64(pieces["piece"], seed=7) ^ (doc.astype(np.uint64) * DOC_MIX)
    repeat = np.zeros(len(key), dtype=bool)
    repeat[later_occurrences(key)] = True
    chars = pieces["piece"].str.len_chars().to_numpy().astype(np.float64)
    n = len(text)
    count, total_chars = np.bincount(doc, minlength=n), np.bincount(doc, weights=chars, minlength=n)
    repeats, repeat_chars = np.bincount(doc, weights=repeat, minlength=n), np.bincount(doc, weights=chars * repeat, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(repeats / count), np.nan_to_num(repeat_chars / total_chars)


def sorted_keys(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keys in sorted order and the position each came from, positions ascending among equal keys.

    Each key is truncated to its top 64 - b bits and packed with its b-bit position into one uint64, so a
    single SIMD sort does what an argsort (several times slower on uint64) would. Truncated keys may merge
    two n-grams by accident with odds of about n^2 / 2^(65 - b): a handful per ten-million-word batch,
    harmless for a repetition statistic."""
    bits = max(int(len(key) - 1).bit_length(), 1)
    shift = np.uint64(bits)
    packed = np.sort(((key >> shift) << shift) | np.arange(len(key), dtype=np.uint64))
    return packed >> shift, (packed & np.uint64((1 << bits) - 1)).view(np.int64)  # below 2**63: a view, no copy


def is_repeated(key: np.ndarray) -> np.ndarray:
    """bool per element: its value occurs more than once."""
    ordered, position = sorted_keys(key)
    same = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(key), dtype=bool)
    repeated[position[1:][same]] = True
    repeated[position[:-1][same]] = True
    return repeated


def later_occurrences(key: np.ndarray) -> np.ndarray:
    """Positions whose value already occurred at an earlier position."""
    ordered, position = sorted_keys(key)
    return position[1:][ordered[1:] == ordered[:-1]]


class Words:
    """The words of a batch of documents, flattened: hash and length per word, and each word's document."""

    def __init__(self, words: pl.Series | None, doc: np.ndarray, n_docs: int, hashes: np.ndarray | None = None,
                 lengths: np.ndarray | None = None):
        self.words = words
        """The words themselves; None for a subset (which needs only hashes and lengths)."""
        self.doc = doc
        self.hashes = hash_words(words) if hashes is None else hashes
        self.lengths = words.str.len_chars().to_numpy().astype(np.float64) if lengths is None else lengths
        self.n_docs = n_docs
        self.total = self.per_doc(self.lengths)

    @classmethod
    def of(cls, text: pl.Series) -> "Words":
        """Whitespace-separated words."""
        words, doc = split_words(text)
        return cls(words, doc, len(text))

    def subset(self, docs: np.ndarray) -> "Words":
        """The words of `docs` only, renumbered 0..len(docs)-1 in that order (docs ascending)."""
        renumber = np.full(self.n_docs, -1, dtype=np.int64)
        renumber[docs] = np.arange(len(docs))
        rows = np.flatnonzero(renumber[self.doc] >= 0)
        return Words(None, renumber[self.doc[rows]], len(docs), self.hashes[rows], self.lengths[rows])

    def per_doc(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.doc, weights=values, minlength=self.n_docs)

    def alphabetic(self) -> np.ndarray:
        return self.words.str.contains(r"\pL").to_numpy().astype(np.float64)

    def distinct_stop_words(self) -> np.ndarray:
        """Per document, how many of the Gopher stop words occur (any of lower, Title or UPPER case)."""
        form = STOP_FORMS.lookup(self.hashes)
        hit = form >= 0
        k = len(STOP_WORDS)
        present = np.zeros(self.n_docs * k, dtype=bool)
        present[self.doc[hit] * k + form[hit] // 3] = True  # forms are grouped by word, three per word
        return present.reshape(self.n_docs, k).sum(axis=1)

    def ngram_keys(self, n: int, starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions (all, or the given `starts`) where an n-gram lies inside one document, and its key (n-gram
        hash mixed with the document, so equal n-grams of different documents differ)."""
        last = len(self.hashes) - n
        if starts is None:  # every position: slices instead of gathers
            count = max(last + 1, 0)
            starts = np.flatnonzero(self.doc[:count] == self.doc[n - 1 : n - 1 + count])
            key = self.hashes[:count].copy()
            for k in range(1, n):
                key = key * MIX + self.hashes[k : k + count]
            key = key[starts]
        else:
            starts = starts[starts <= last]
            starts = starts[self.doc[starts] == self.doc[starts + n - 1]]
            key = self.hashes[starts].copy()
            for k in range(1, n):
                key = key * MIX + self.hashes[starts + k]
        return starts, key ^ (self.doc[starts].view(np.uint64) * DOC_MIX)  # doc: int64, never negative

    def repeated_starts(self, n: int) -> np.ndarray:
        """Positions of n-grams that occur more than once in their document. An n-gram repeats only if its
        (n-1)-gram prefix does, so longer n-grams are checked only where the shorter one repeated."""
        cache = self.__dict__.setdefault("_repeated", {})
        if n not in cache:
            candidates = None if n <= 2 else self.repeated_starts(n - 1)
            starts, key = self.ngram_keys(n, candidates)
            cache[n] = starts[is_repeated(key)]
        return cache[n]

    def top_ngram_share(self, n: int) -> np.ndarray:
        """Share of word characters covered by the occurrences of one repeated n-gram, for the n-gram covering
        the most (Gopher takes the most frequent one; the two differ only when a rarer n-gram is longer, and
        the maximum needs no per-document sort)."""
        starts, key = self.ngram_keys(n, self.repeated_starts(n))
        covered = np.zeros(self.n_docs)
        if len(starts):
            spans = np.cumsum(np.concatenate([[0.0], self.lengths]))
            chars = spans[starts + n] - spans[starts]
            ordered, position = sorted_keys(key)
            first = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
            counts = np.diff(np.concatenate([first, [len(ordered)]]))
            leader = position[first]  # one occurrence of each distinct n-gram
            np.maximum.at(covered, self.doc[starts[leader]], chars[leader] * counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(covered / self.total)

    def duplicate_ngram_share(self, n: int) -> np.ndarray:
        """Share of word characters inside n-grams that occur more than once in their document."""
        starts = self.repeated_starts(n)
        covered = np.unique((starts[:, None] + np.arange(n)).ravel())  # few: repeats are rare in real text
        chars = np.bincount(self.doc[covered], weights=self.lengths[covered], minlength=self.n_docs)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(chars / self.total)
