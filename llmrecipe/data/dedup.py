"""Deduplication's per-op parts: what a shard job observes of its documents, the records it partitions by key,
and what a partition decides (llmrecipe.data.corpusjobs runs them as shuffle stages).

Exact dedup keeps a set of texts that does not depend on document order: each group of duplicates keeps the member
with the smallest digest of its text (for identical texts, the first occurrence). Near dedup keeps the earliest
document of each cluster in source order (the order the documents were observed), so the copy a user put first,
in the source listed first, is the one that stays.

Documents are named by position (llmrecipe.data.shuffle): a partition's records come from every shard, and the
smallest position is the earliest document.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from llmrecipe.data.hashing import xxh64
from llmrecipe.data.minhash import band_keys, shingles, signatures, splitmix64
from llmrecipe.data.shuffle import row_of, shard_of
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


@dataclass
class Observation:
    """What deciding needs from one shard's documents."""

    keys: np.ndarray
    """[docs, k] uint64: the keys partitioned by the shuffle (`records` makes its records of them)."""
    sides: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-shard arrays read later by position (signatures, shingle sets), saved beside the partitions."""


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
    `normalized` groups texts that differ in case or spacing. Records are partitioned by content key, so a whole
    group lands in one partition, which decides it alone."""

    reason = "duplicate"
    width = 4
    """A record: content key (2 words), digest, position."""

    @staticmethod
    def observation(op: DedupExact, text: pl.Series, words: WordHashes | None = None) -> Observation:
        """`words` (the texts' lower-cased word hashes, when known) are not needed."""
        digest = xxh64(text, seed=DIGEST_SEED)
        return Observation(np.column_stack([content_key(text, op.compare == "normalized"), digest]))

    @staticmethod
    def records(op: DedupExact, keys: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The records of documents at `positions` with `keys`, and the hash each is partitioned by."""
        return np.column_stack([keys, positions]), keys[:, 0]

    @staticmethod
    def decided(records: np.ndarray) -> np.ndarray:
        """[drops, 2] (dropped position, keeper position) of one partition: sorted by key, then digest, then
        position, each group's first record is its keeper."""
        order = np.lexsort((records[:, 3], records[:, 2], records[:, 1], records[:, 0]))
        ordered = records[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = (ordered[1:, :2] != ordered[:-1, :2]).any(axis=1)
        keeper = ordered[np.flatnonzero(starts)[np.cumsum(starts) - 1], 3]
        dropped = ~starts
        return np.column_stack([ordered[dropped, 3], keeper[dropped]])


class NearDedup:
    """MinHash + LSH: records are (band key, band, position), partitioned by band key, so each bucket lands in
    one partition, which chains its members into candidate pairs. Pairs are judged by their signatures (or, with
    `verify`, their exact shingle Jaccard), read by position from the shards' side files."""

    reason = "near_duplicate"
    width = 3

    @staticmethod
    def observation(op: DedupNear, text: pl.Series, words: WordHashes | None = None) -> Observation:
        """Band keys, signatures and with `verify` each document's distinct shingle hashes (concatenated, sorted
        within each document) and their counts; `words`: the texts' `lowercase_word_hashes` when known."""
        signature = signatures(text, op.shingle_size, op.num_perm, words)  # [docs, num_perm]
        sides = {"signatures": signature}
        if op.verify:
            sides["shingles"], sides["shingle_counts"] = shingle_sets(text, op.shingle_size, words)
        return Observation(band_keys(signature, op.bands), sides)  # keys: [docs, bands]

    @staticmethod
    def records(op: DedupNear, keys: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        docs, bands = keys.shape
        band = np.tile(np.arange(bands, dtype=np.uint64), docs)
        flat = keys.reshape(-1)
        return np.column_stack([flat, band, np.repeat(positions, bands)]), flat

    @staticmethod
    def candidate_pairs(records: np.ndarray) -> np.ndarray:
        """[pairs, 2] (left, right), left < right: documents sharing a band key, as neighbours in each bucket in
        position order (a chain through each bucket, so a bucket of k documents gives k - 1 pairs, not k^2);
        unique."""
        order = np.lexsort((records[:, 2], records[:, 0], records[:, 1]))
        ordered = records[order]
        same = np.flatnonzero((ordered[1:, 0] == ordered[:-1, 0]) & (ordered[1:, 1] == ordered[:-1, 1]))
        return unique_pairs(np.column_stack([ordered[same, 2], ordered[same + 1, 2]]))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of [n, 2] uint64 `pairs`, sorted."""
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    ordered = pairs[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    return ordered[first]


def pair_partition(pairs: np.ndarray) -> np.ndarray:
    """The hash a candidate pair is partitioned by, so copies of it found in several band partitions meet."""
    return splitmix64(pairs[:, 0] ^ splitmix64(pairs[:, 1]))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by a sort (numpy's default hash-based unique is several times slower on these arrays)."""
    ordered = np.sort(values)
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first]


def side_path(folder: Path, shard: int, name: str) -> Path:
    """Where shard `shard`'s side array `name` is saved (raw, row-major: read by row)."""
    return folder / f"{name}-{shard:06d}.raw"


def save_sides(folder: Path, shard: int, sides: dict[str, np.ndarray]) -> None:
    for name, array in sides.items():
        path = side_path(folder, shard, name)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        np.ascontiguousarray(array).tofile(partial)
        partial.replace(path)


def similar_pairs(op: DedupNear, folder: Path, pairs: np.ndarray) -> np.ndarray:
    """bool per pair (left, right positions): estimated Jaccard similarity (share of equal signature values), or
    with `verify` the exact shingle Jaccard, >= the threshold. Each chunk of pairs reads just its documents' rows
    from the shards' side files. (A memory map would not do: every page fault maps its neighbours too, so random
    rows soon make most of a file resident.)"""
    similar = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), VERIFY_CHUNK):
        a, b = pairs[start : start + VERIFY_CHUNK, 0], pairs[start : start + VERIFY_CHUNK, 1]
        wanted = sorted_unique(np.concatenate([a, b]))
        if op.verify:
            sets = shingle_sets_at(folder, wanted)
            found = [jaccard(sets[int(x)], sets[int(y)]) >= op.threshold for x, y in zip(a.tolist(), b.tolist())]
            similar[start : start + VERIFY_CHUNK] = found
        else:
            signature = signatures_at(folder, wanted, op.num_perm)  # [wanted, num_perm]
            same = signature[np.searchsorted(wanted, a)] == signature[np.searchsorted(wanted, b)]
            similar[start : start + VERIFY_CHUNK] = same.mean(axis=1) >= op.threshold
    return similar


def signatures_at(folder: Path, positions: np.ndarray, num_perm: int) -> np.ndarray:
    """[positions, num_perm] uint32: the signatures of the documents at `positions` (ascending)."""
    found = np.empty((len(positions), num_perm), dtype=np.uint32)
    shards = shard_of(positions)
    for shard in np.unique(shards).tolist():
        at = np.flatnonzero(shards == shard)
        with open(side_path(folder, shard, "signatures"), "rb") as file:
            found[at] = read_rows(file.fileno(), row_of(positions[at]), num_perm)
    return found


def shingle_sets_at(folder: Path, positions: np.ndarray) -> dict[int, np.ndarray]:
    """Each position's distinct shingle hashes (sorted)."""
    found = {}
    shards = shard_of(positions)
    for shard in np.unique(shards).tolist():
        counts = np.fromfile(side_path(folder, shard, "shingle_counts"), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        with open(side_path(folder, shard, "shingles"), "rb") as file:
            for at in positions[shards == shard].tolist():
                row = int(row_of(np.uint64(at)))
                values = np.empty(int(offsets[row + 1] - offsets[row]), dtype=np.uint64)
                if len(values):
                    os.preadv(file.fileno(), [memoryview(values).cast("B")], int(offsets[row]) * 8)
                found[at] = values
    return found


def components_of(pairs: np.ndarray) -> np.ndarray:
    """[drops, 2] (dropped position, kept position) from similar pairs: each connected component keeps its
    smallest position. Only documents in some pair take part, so memory follows the duplicates, not the corpus."""
    nodes = sorted_unique(pairs.reshape(-1))
    label = components(len(nodes), np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1]))
    dropped = np.flatnonzero(label != np.arange(len(nodes)))
    return np.column_stack([nodes[dropped], nodes[label[dropped]]])


def shingle_sets(text: pl.Series, size: int, words: WordHashes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each document's distinct shingle hashes, sorted, concatenated in document order; and their count per
    document."""
    values, owners = shingles(text, size, words)
    order = np.lexsort((values, owners))  # by document, then value
    values, owners = values[order], owners[order]
    first = np.ones(len(values), dtype=bool)
    first[1:] = (values[1:] != values[:-1]) | (owners[1:] != owners[:-1])
    return values[first], np.bincount(owners[first], minlength=len(text)).astype(np.int64)


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
