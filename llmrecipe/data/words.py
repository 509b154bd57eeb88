"""The words of a batch of documents: whitespace-separated tokens, flattened, with each word's document.

Quality rules, MinHash shingles and the split-mismatch report all work on words hashed to uint64, so a
word is a hash from here on (XXH64, a few milliseconds per million short strings).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from llmrecipe.data.clean import replaced_where
from llmrecipe.data.hashing import xxh64

SEED = 11
"""Seed of the words' XXH64 (MinHash values and split-profile buckets are made from it: stable bytes)."""
WordHashes = tuple[np.ndarray, np.ndarray]
"""Per word of a batch: its document's row (int64) and its hash (uint64)."""


def split_words(text: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Every word of every text in order, and the row of the text it came from (int64). Splitting on a space
    is far faster than a regex, so other whitespace is turned into spaces first."""
    spaced = replaced_where(text, r"[\t\n\r\f\v\u00a0]", " ")
    pieces = spaced.str.split(" ")
    flat = pieces.explode()
    doc = np.repeat(np.arange(len(text), dtype=np.int64), pieces.list.len().to_numpy())
    nonempty = flat != ""
    return flat.filter(nonempty), doc[nonempty.to_numpy()]


def hash_words(words: pl.Series) -> np.ndarray:
    """uint64 per word: equal words, equal hashes."""
    return xxh64(words, seed=SEED)


def word_hashes(text: pl.Series) -> WordHashes:
    """Each word's document row and hash, for ops that need nothing else about the words."""
    words, doc = split_words(text)
    return doc, hash_words(words)


def lowercase_word_hashes(text: pl.Series) -> WordHashes:
    """`word_hashes` of the lower-cased texts: the words MinHash shingles and the split-mismatch report count."""
    return word_hashes(text.str.to_lowercase())


class WordSet:
    """A small fixed set of words looked up in one table read per word: each member's hash has a distinct
    value in some window of `bits` bits, which indexes the table."""

    def __init__(self, members: list[str], bits: int = 12):
        self.hashes = hash_words(pl.Series(members, dtype=pl.String))
        self.mask = np.uint64((1 << bits) - 1)
        self.shift = next(np.uint64(shift) for shift in range(64 - bits + 1)
                          if len(np.unique(self._slot(self.hashes, np.uint64(shift)))) == len(members))
        slots = self._slot(self.hashes, self.shift)
        self.table = np.zeros(1 << bits, dtype=np.uint64)
        self.index = np.full(1 << bits, -1, dtype=np.int64)
        self.table[slots] = self.hashes
        self.index[slots] = np.arange(len(members))

    def _slot(self, hashes: np.ndarray, shift: np.uint64) -> np.ndarray:
        return ((hashes >> shift) & self.mask).view(np.int64)  # below 2**bits: a view, no copy

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """int64 per hash: the index of the member it is, or -1."""
        slots = self._slot(hashes, self.shift)
        return np.where(self.table[slots] == hashes, self.index[slots], -1)
