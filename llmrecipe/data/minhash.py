"""MinHash signatures and LSH band keys for a batch of documents, vectorized in numpy.

Signatures use one-permutation hashing (Li, Owen & Zhang 2012) with rotation densification (Shrivastava &
Li 2014): each word shingle is hashed once; the hash's high bits choose one of `num_perm` bins and its low
bits are the value; a bin keeps its smallest value; an empty bin borrows from the next non-empty bin to its
right, mixed with the distance. Two documents' signatures agree in a bin with probability equal to their
shingle Jaccard similarity, exactly as with `num_perm` independent permutations, but hashing costs one pass
over the shingles instead of `num_perm`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from llmrecipe.data.words import WordHashes, lowercase_word_hashes

SHINGLE_MIX = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint64(1 << 32)
"""Marks a bin no shingle fell into (bin values are below 2**32)."""


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer: every output bit depends on every input bit (vectorized, wraps mod 2**64)."""
    x = x ^ (x >> np.uint64(30))  # a new array: the rest works in place on it
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def shingles(text: pl.Series, size: int, words: WordHashes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of each document's word shingles (lower-cased whitespace-separated words, `size` per shingle) and each
    shingle's document. A document with fewer words than `size` gets one shingle of all its words. `words`: the
    texts' `lowercase_word_hashes` when already known."""
    doc, hashes = words if words is not None else lowercase_word_hashes(text)
    n = len(hashes)
    starts = np.searchsorted(doc, np.arange(len(text)))  # first word of each document
    lengths = np.bincount(doc, minlength=len(text))
    count = max(n - size + 1, 0)
    gram = hashes[:count].copy()
    for k in range(1, size):  # in place: no new array per word of the shingle
        gram *= SHINGLE_MIX
        gram += hashes[k : k + count]
    short = np.flatnonzero((lengths > 0) & (lengths < size))
    short_gram = _short_grams(hashes, starts[short], lengths[short])
    valid = np.flatnonzero(doc[:count] == doc[size - 1 : size - 1 + count]) if count else np.zeros(0, dtype=np.int64)
    values = np.concatenate([gram[valid], short_gram])
    owners = np.concatenate([doc[valid], short])
    return splitmix64(values), owners


def _short_grams(hashes: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    gram = hashes[starts].copy() if len(starts) else np.zeros(0, dtype=np.uint64)
    for k in range(1, int(lengths.max()) if len(lengths) else 0):
        more = lengths > k
        gram[more] = gram[more] * SHINGLE_MIX + hashes[starts[more] + k]
    return gram


def signatures(text: pl.Series, size: int, num_perm: int, words: WordHashes | None = None) -> np.ndarray:
    """[docs, num_perm] uint32 signatures (densified one-permutation MinHash); `words` as for `shingles`."""
    values, owners = shingles(text, size, words)
    n_docs = len(text)
    bins = ((values >> np.uint64(32)) * np.uint64(num_perm)) >> np.uint64(32)
    table = np.full(n_docs * num_perm, EMPTY, dtype=np.uint64)
    np.minimum.at(table, owners.astype(np.uint64) * np.uint64(num_perm) + bins, values & np.uint64(0xFFFFFFFF))
    return densify(table.reshape(n_docs, num_perm))


def densify(table: np.ndarray) -> np.ndarray:
    """Fill each empty bin from the next non-empty bin to its right (cyclically), mixed with the distance so
    borrowed values differ from the originals. A document without shingles gets a constant signature."""
    n_docs, num_perm = table.shape
    filled = table != EMPTY
    # the column of the nearest filled bin at or after each column, over the row written twice (cyclic)
    position = np.where(filled, np.arange(num_perm, dtype=np.int32), np.int32(2 * num_perm))
    doubled = np.concatenate([position, position + num_perm], axis=1)[:, ::-1].copy()  # reversed, contiguous
    nearest = np.minimum.accumulate(doubled, axis=1)[:, ::-1][:, :num_perm]  # [docs, num_perm]
    rows, columns = np.nonzero(~filled)  # only empty bins borrow
    source = np.minimum(nearest[rows, columns], 2 * num_perm - 1)
    distance = (source - columns).astype(np.uint64)
    borrowed = table[rows, source % num_perm]
    mixed = table.copy()
    mixed[rows, columns] = splitmix64(borrowed + distance * SHINGLE_MIX) & np.uint64(0xFFFFFFFF)
    return mixed.astype(np.uint32)


def band_keys(signature: np.ndarray, bands: int) -> np.ndarray:
    """[docs, bands] uint64: one hash per band of `num_perm / bands` signature values."""
    n_docs, num_perm = signature.shape
    rows = num_perm // bands
    per_band = signature.reshape(n_docs, bands, rows).astype(np.uint64)
    key = np.zeros((n_docs, bands), dtype=np.uint64)
    for r in range(rows):
        key = key * SHINGLE_MIX + per_band[:, :, r]
    return splitmix64(key + np.arange(bands, dtype=np.uint64))
