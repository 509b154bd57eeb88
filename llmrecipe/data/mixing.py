"""A weighted mix of sources decided without holding the corpus's draws in one process.

Each document draws `xxh64(id, seed)`; a source keeps its `quota` documents of smallest draw, ties broken by
corpus position. Finding those is a selection, done in two rounds of jobs over the shards: each job counts its
documents' draws per source in 2^16 buckets of the draw's top bits (the step's process sums the counts: a fixed
size, whatever the corpus); then, in the one bucket per source where its quota runs out, each job returns the
draws and positions of its documents there (about 1/65,536 of the corpus). The last kept (draw, position) per
source is the cutoff each shard job applies to its own documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from llmrecipe.data.hashing import xxh64
from llmrecipe.data.shuffle import position

BUCKET_BITS = 16
KEEP_ALL = (2**64 - 1, 2**64 - 1)
"""A cutoff no document passes above: the source keeps everything."""


def draws(frame: pl.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each document's draw and source."""
    return xxh64(frame["id"], seed=seed), frame["source"].to_numpy()


def bucket_of(draw: np.ndarray) -> np.ndarray:
    return (draw >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)


@dataclass
class CountJob:
    """One shard's draws counted per source and bucket."""

    files: list[Path]
    seed: int
    sources: int

    def run(self) -> np.ndarray:
        draw, source = draws(pl.read_parquet(self.files, columns=["id", "source"]), self.seed)
        cell = source.astype(np.int64) * (1 << BUCKET_BITS) + bucket_of(draw)
        return np.bincount(cell, minlength=self.sources << BUCKET_BITS).reshape(self.sources, -1)


@dataclass
class CandidateJob:
    """One shard's documents in their source's deciding bucket: [n, 3] (source, draw, position)."""

    files: list[Path]
    seed: int
    number: int
    buckets: list[int]
    """Per source its deciding bucket, or -1 (the source keeps all or none)."""

    def run(self) -> np.ndarray:
        draw, source = draws(pl.read_parquet(self.files, columns=["id", "source"]), self.seed)
        wanted = np.array(self.buckets, dtype=np.int64)[source] == bucket_of(draw)
        rows = np.flatnonzero(wanted)
        return np.column_stack([source[rows].astype(np.uint64), draw[rows], position(self.number, rows)])


def deciding_buckets(counts: np.ndarray, quota: np.ndarray) -> tuple[list[int], list[int]]:
    """Per source the bucket where its quota runs out (-1 when it keeps all or nothing), and how many documents
    it takes from that bucket."""
    buckets, needed = [], []
    for per_bucket, wanted in zip(counts, quota.tolist()):
        before = np.concatenate([[0], np.cumsum(per_bucket)])
        if wanted <= 0 or wanted >= before[-1]:
            buckets.append(-1)
            needed.append(0)
            continue
        bucket = int(np.searchsorted(before, wanted, side="left")) - 1  # the bucket holding the wanted-th draw
        buckets.append(bucket)
        needed.append(int(wanted - before[bucket]))
    return buckets, needed


def cutoffs(candidates: np.ndarray, buckets: list[int], needed: list[int], quota: np.ndarray,
            have: np.ndarray) -> list[tuple[int, int] | None]:
    """Per source the last kept (draw, position), KEEP_ALL, or None (it keeps nothing)."""
    found: list[tuple[int, int] | None] = []
    for source, (bucket, count) in enumerate(zip(buckets, needed)):
        if bucket < 0:
            found.append(KEEP_ALL if 0 < quota[source] and quota[source] >= have[source] else None)
            continue
        mine = candidates[candidates[:, 0] == source]
        order = np.lexsort((mine[:, 2], mine[:, 1]))  # by draw, then position
        last = mine[order[count - 1]]
        found.append((int(last[1]), int(last[2])))
    return found


def kept(frame: pl.DataFrame, seed: int, shard: int, cutoff: list[tuple[int, int] | None]) -> np.ndarray:
    """bool per row of shard `shard` (`frame`, as read): whether the mix keeps it."""
    draw, source = draws(frame, seed)
    at = position(shard, np.arange(len(frame)))
    keep = np.zeros(len(frame), dtype=bool)
    for index, last in enumerate(cutoff):
        if last is None:
            continue
        mine = source == index
        below = (draw < np.uint64(last[0])) | ((draw == np.uint64(last[0])) & (at <= np.uint64(last[1])))
        keep |= mine & below
    return keep
