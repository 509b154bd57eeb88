"""Deduplication over the whole corpus, batch by batch: each op observes every batch (keeping only compact
keys in memory, signatures on disk) and then decides, once, which documents stay.

Exact dedup keeps a set of texts that does not depend on document order: each group of duplicates keeps the member
with the smallest digest of its text (for identical texts, the first occurrence). Near dedup keeps the earliest
document of each cluster in source order (the order the documents were observed), so the copy a user put first,
in the source listed first, is the one that stays.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl

from llmrecipe.data.hashing import xxh64
from llmrecipe.data.minhash import band_keys, shingles, signatures
from llmrecipe.data.quality import sorted_keys
from llmrecipe.data.words import WordHashes
from llmrecipe.recipe.data import DedupExact, DedupNear

VERIFY_CHUNK = 1 << 14
"""Candidate pairs whose signatures are compared at once (bounds the rows read into memory)."""
READ_GAP = 64
"""Rows at most this far apart are read together, the rows between them with them."""
READ_SPAN = 1 << 12
"""Rows read together lie in one aligned block of this many rows (bounds one read's buffer)."""
DIGEST_SEED = 303
"""Seed of the digest that picks each group's keeper (smallest digest wins)."""


@dataclass
class Decision:
    keep: np.ndarray
    """bool per observed document, in observation order."""
    duplicate_of: np.ndarray
    """For each dropped document the index of the document kept in its place (-1 for kept ones)."""
    reason: str


def content_key(text: pl.Series, normalized: bool) -> np.ndarray:
    """[docs, 2] uint64: a 128-bit digest of each text (two seeded 64-bit hashes), lower-cased with whitespace
    runs collapsed when `normalized`. 128 bits make an accidental collision in any corpus vanishingly rare."""
    if normalized:
        # only runs and non-space whitespace need replacing: far fewer matches than every single space
        text = text.str.to_lowercase().str.replace_all(r"\s{2,}|[\t\n\r\f\v]", " ").str.strip_chars()
    return np.stack([xxh64(text, seed=101), xxh64(text, seed=202)], axis=1)


class ExactDedup:
    """Documents with equal content keys form a group; the group keeps the member with the smallest digest of
    its raw text (the first of identical texts), so the kept text does not depend on document order even when
    `normalized` groups texts that differ in case or spacing."""

    def __init__(self, op: DedupExact, work: Path):
        self.op = op
        self.keys: list[np.ndarray] = []
        self.digests: list[np.ndarray] = []

    def observe(self, text: pl.Series) -> None:
        self.absorb(self.observation(self.op, text))

    @staticmethod
    def observation(op: DedupExact, text: pl.Series, words: WordHashes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What deciding needs from one batch (computed where the batch is, possibly a worker process); `words`
        (the texts' lower-cased word hashes, when known) are not needed."""
        return content_key(text, op.compare == "normalized"), xxh64(text, seed=DIGEST_SEED)

    def absorb(self, observation: tuple[np.ndarray, np.ndarray]) -> None:
        keys, digests = observation
        self.keys.append(keys)
        self.digests.append(digests)

    def decide(self, among: np.ndarray | None = None) -> Decision:
        """Which documents stay; with `among` (bool per observed document), deciding among those only (see
        `widened`)."""
        keys = np.concatenate(self.keys) if self.keys else np.zeros((0, 2), dtype=np.uint64)
        digests = np.concatenate(self.digests) if self.digests else np.zeros(0, dtype=np.uint64)
        if among is not None:
            return widened(ExactDedup._decided(keys[among], digests[among]), among)
        return ExactDedup._decided(keys, digests)

    @staticmethod
    def _decided(keys: np.ndarray, digests: np.ndarray) -> Decision:
        # sorted by key, then digest, then position (lexsort is stable): each group's first row is its keeper
        order = np.lexsort((digests, keys[:, 1], keys[:, 0]))
        ordered = keys[order]  # [docs, 2]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
        del ordered
        keeper = np.empty(len(order), dtype=np.int64)
        keeper[order] = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]
        keep = keeper == np.arange(len(keeper))
        return Decision(keep, np.where(keep, -1, keeper), "duplicate")


class NearDedup:
    """MinHash + LSH, sharded by band: each band's keys (8 bytes per document) and the signatures go to files
    in `work`; deciding reads one band at a time, and signatures only for candidate pairs. Memory holds one
    band and a count per document. With `verify`, each document's distinct shingle hashes go to a file too, and
    candidate pairs are judged by their exact Jaccard similarity."""

    def __init__(self, op: DedupNear, work: Path):
        self.op = op
        self.folder = work / "near"  # `work`: a folder of this op's own
        shutil.rmtree(self.folder, ignore_errors=True)  # what a killed run left
        self.folder.mkdir(parents=True)
        self.signature_file = open(self.folder / "signatures.u32", "wb")
        self.band_files = [open(self.folder / f"band-{band}.u64", "wb") for band in range(op.bands)]
        self.shingle_file = open(self.folder / "shingles.u64", "wb") if op.verify else None
        self.shingle_counts: list[np.ndarray] = []
        self.observed = 0

    def observe(self, text: pl.Series) -> None:
        self.absorb(self.observation(self.op, text))

    @staticmethod
    def observation(op: DedupNear, text: pl.Series, words: WordHashes | None = None) -> tuple[np.ndarray, ...]:
        """Signatures and band keys of one batch (computed where the batch is), and with `verify` each document's
        distinct shingle hashes (concatenated, sorted within each document) and their counts; `words`: the
        texts' `lowercase_word_hashes` when already known."""
        signature = signatures(text, op.shingle_size, op.num_perm, words)  # [docs, num_perm]
        keys = band_keys(signature, op.bands)  # [docs, bands]
        if not op.verify:
            return signature, keys
        return signature, keys, *shingle_sets(text, op.shingle_size, words)

    def absorb(self, observation: tuple[np.ndarray, ...]) -> None:
        signature, keys, *sets = observation
        self.signature_file.write(signature.tobytes())
        for band, file in enumerate(self.band_files):
            file.write(np.ascontiguousarray(keys[:, band]).tobytes())
        if self.shingle_file is not None:
            self.shingle_file.write(sets[0].tobytes())
            self.shingle_counts.append(sets[1])
        self.observed += len(signature)

    def decide(self, among: np.ndarray | None = None) -> Decision:
        """Which documents stay; with `among` (bool per observed document), deciding among those only (see
        `widened`)."""
        for file in [self.signature_file, *self.band_files, *([self.shingle_file] if self.shingle_file else [])]:
            file.close()
        observed = self.observed
        rows = np.arange(observed) if among is None else np.flatnonzero(among)  # observed row of each candidate
        n = len(rows)
        if n == 0:
            shutil.rmtree(self.folder)
            return widened(Decision(np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64), "near_duplicate"), among)
        bands = (np.fromfile(self.folder / f"band-{band}.u64", dtype=np.uint64)[rows] for band in range(self.op.bands))
        left, right = candidate_pairs(bands, n)
        if self.op.verify:
            counts = np.concatenate(self.shingle_counts)
            similar = exactly_similar(self.folder / "shingles.u64", np.concatenate([[0], np.cumsum(counts)]),
                                      rows[left], rows[right], self.op.threshold)
        else:
            similar = verified(self.folder / "signatures.u32", (observed, self.op.num_perm), rows[left], rows[right],
                               self.op.threshold)
        label = components(n, left[similar], right[similar])  # the smallest index: the cluster's earliest document
        shutil.rmtree(self.folder)
        keep = label == np.arange(n)
        return widened(Decision(keep, np.where(keep, -1, label), "near_duplicate"), among)


def widened(decision: Decision, among: np.ndarray | None) -> Decision:
    """A decision made among some observed documents (`among`, bool per observed document) stated for all of
    them: the others are kept (an earlier decision already removes them) and row numbers are observed rows.
    This lets a pass observe several dedup ops at once, each deciding among the previous one's survivors."""
    if among is None:
        return decision
    rows = np.flatnonzero(among)
    keep = np.ones(len(among), dtype=bool)
    keep[rows] = decision.keep
    duplicate_of = np.full(len(among), -1, dtype=np.int64)
    duplicate_of[rows] = np.where(decision.duplicate_of >= 0, rows[np.maximum(decision.duplicate_of, 0)], -1)
    return Decision(keep, duplicate_of, decision.reason)


def candidate_pairs(bands: Iterable[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of documents sharing a band key: in each band, neighbours in key order with equal keys (a chain
    through each bucket, so a bucket of k documents gives k - 1 pairs, not k^2), documents in index order
    inside a bucket. Unique, smaller index first.

    Keys are sorted packed with their index (`sorted_keys`: one sort instead of a slower stable argsort); in
    the rare band where two different keys share the top bits the packing keeps, it falls back to the
    argsort."""
    unique = np.zeros(0, dtype=np.int64)
    for keys in bands:
        truncated, order = sorted_keys(keys)
        ordered = keys[order]
        same_key = ordered[1:] == ordered[:-1]
        if not np.array_equal(same_key, truncated[1:] == truncated[:-1]):
            order = np.argsort(keys, kind="stable")
            ordered = keys[order]
            same_key = ordered[1:] == ordered[:-1]
        same = np.flatnonzero(same_key)
        del ordered, truncated
        left, right = order[same], order[same + 1]  # left < right: equal keys are in index order
        # merged band by band: most pairs recur in many bands, so the union stays far smaller than their sum
        unique = sorted_unique(np.concatenate([unique, left * (n + 1) + right]))
    return unique // (n + 1), unique % (n + 1)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by a sort (numpy's default hash-based unique is several times slower on these arrays)."""
    ordered = np.sort(values)
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first]


def verified(path: Path, shape: tuple[int, int], left: np.ndarray, right: np.ndarray, threshold: float) -> np.ndarray:
    """bool per pair: estimated Jaccard similarity (share of equal signature values) >= threshold.

    The signatures stay on disk and each chunk of pairs reads just its rows. (A memory map would not do: every
    page fault maps its neighbours too, so random rows soon make most of the file resident.)"""
    similar = np.zeros(len(left), dtype=bool)
    with open(path, "rb") as file:
        for start in range(0, len(left), VERIFY_CHUNK):
            a, b = left[start : start + VERIFY_CHUNK], right[start : start + VERIFY_CHUNK]
            rows = sorted_unique(np.concatenate([a, b]))
            signature = read_rows(file.fileno(), rows, shape[1])  # [rows, num_perm]
            same = signature[np.searchsorted(rows, a)] == signature[np.searchsorted(rows, b)]
            similar[start : start + VERIFY_CHUNK] = same.mean(axis=1) >= threshold
    return similar


def shingle_sets(text: pl.Series, size: int, words: WordHashes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each document's distinct shingle hashes, sorted, concatenated in document order; and their count per
    document."""
    values, owners = shingles(text, size, words)
    order = np.lexsort((values, owners))  # by document, then value
    values, owners = values[order], owners[order]
    first = np.ones(len(values), dtype=bool)
    first[1:] = (values[1:] != values[:-1]) | (owners[1:] != owners[:-1])
    return values[first], np.bincount(owners[first], minlength=len(text)).astype(np.int64)


def exactly_similar(path: Path, offsets: np.ndarray, left: np.ndarray, right: np.ndarray, threshold: float) -> np.ndarray:
    """bool per pair: exact Jaccard similarity of the two documents' shingle sets >= threshold (two documents
    without shingles are equal). Each document's set is read once per chunk of pairs."""
    similar = np.zeros(len(left), dtype=bool)
    with open(path, "rb") as file:
        for start in range(0, len(left), VERIFY_CHUNK):
            a, b = left[start : start + VERIFY_CHUNK], right[start : start + VERIFY_CHUNK]
            sets = {int(row): read_set(file.fileno(), offsets, int(row)) for row in sorted_unique(np.concatenate([a, b]))}
            similar[start : start + VERIFY_CHUNK] = [jaccard(sets[int(x)], sets[int(y)]) >= threshold for x, y in zip(a, b)]
    return similar


def read_set(fd: int, offsets: np.ndarray, row: int) -> np.ndarray:
    values = np.empty(int(offsets[row + 1] - offsets[row]), dtype=np.uint64)
    if len(values):
        os.preadv(fd, [memoryview(values).cast("B")], int(offsets[row]) * 8)
    return values


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two sorted arrays of distinct values."""
    if not len(a) and not len(b):
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def read_rows(fd: int, rows: np.ndarray, width: int) -> np.ndarray:
    """[len(rows), width] uint32: the given rows (ascending) of a row-major uint32 file. Rows close together
    are read with one positioned read of the span between them (in spans of at most READ_SPAN rows), which
    costs far fewer system calls than one read per row when duplicates are common."""
    found = np.empty((len(rows), width), dtype=np.uint32)
    if not len(rows):
        return found
    size = width * 4
    breaks = np.flatnonzero((np.diff(rows) > READ_GAP) | (np.diff(rows // READ_SPAN) != 0)) + 1
    starts, ends = np.concatenate([[0], breaks]).tolist(), np.concatenate([breaks, [len(rows)]]).tolist()
    for start, end in zip(starts, ends):
        first, last = int(rows[start]), int(rows[end - 1])
        span = np.empty((last - first + 1, width), dtype=np.uint32)
        os.preadv(fd, [memoryview(span).cast("B")], first * size)
        found[start:end] = span[rows[start:end] - first]
    return found


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of the graph of verified pairs: each document's label is the smallest index in its
    component. Union-find, vectorized: hook roots onto the smaller root, then compress paths, until stable."""
    label = np.arange(n)
    while True:
        a, b = label[left], label[right]
        if np.array_equal(a, b):
            return label
        low = np.minimum(a, b)
        np.minimum.at(label, a, low)
        np.minimum.at(label, b, low)
        while not np.array_equal(label[label], label):
            label = label[label]
