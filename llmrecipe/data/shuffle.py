"""Partitioned record files: how the data step's dedup stages hand keys, pairs and drops to one another.

A producer (a job) writes one file of fixed-width uint64 records grouped by destination partition, with the
partitions' row offsets as the file's header; a consumer reads its partition's byte range from every
producer's file. So a shuffle of P producers to Q consumers makes P files (not P x Q), and each consumer holds
only its partition in memory.

A document is named by its position: its shard's number in the pass that observed it (high 32 bits) and its row
in that shard (low 32 bits). Positions sort in corpus order, so "the earliest document" is the smallest position
whichever job holds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

ROW_BITS = np.uint64(32)


def position(shard: int, rows: np.ndarray) -> np.ndarray:
    """The positions of rows `rows` of shard `shard`."""
    return (np.uint64(shard) << ROW_BITS) | rows.astype(np.uint64)


def shard_of(positions: np.ndarray) -> np.ndarray:
    return (positions >> ROW_BITS).astype(np.int64)


def row_of(positions: np.ndarray) -> np.ndarray:
    return (positions & np.uint64(0xFFFFFFFF)).astype(np.int64)


def write_partitioned(path: Path, records: np.ndarray, partition: np.ndarray, partitions: int) -> None:
    """`records` ([n, width] uint64) grouped by `partition` (int per record, below `partitions`), keeping their
    order inside each partition; renamed into place last, so a file that exists is whole."""
    records = np.ascontiguousarray(records, dtype=np.uint64)  # [n, width]
    order = np.argsort(partition, kind="stable")
    counts = np.bincount(partition, minlength=partitions)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    header = np.concatenate([[partitions, records.shape[1]], offsets]).astype(np.uint64)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as file:
        file.write(header.tobytes())
        file.write(records[order].tobytes())
    partial.replace(path)


def read_partition(paths: Iterable[Path], partition: int, width: int) -> np.ndarray:
    """[rows, width] uint64: partition `partition` of every file in `paths` that exists, in the files' order."""
    found = [np.zeros((0, width), dtype=np.uint64)]
    for path in paths:
        try:
            file = open(path, "rb")
        except FileNotFoundError:  # its producer had no records (an empty shard)
            continue
        with file:
            partitions, stored_width = np.frombuffer(file.read(16), dtype=np.uint64).tolist()
            if stored_width != width or not partition < partitions:
                raise ValueError(f"{path} holds {partitions} partitions of {stored_width}-wide records")
            file.seek(16 + 8 * partition)
            start, end = np.frombuffer(file.read(16), dtype=np.uint64).tolist()
            rows = np.empty((end - start, width), dtype=np.uint64)
            if end > start:
                os.preadv(file.fileno(), [memoryview(rows).cast("B")], 8 * (partitions + 3 + start * width))
            found.append(rows)
    return np.concatenate(found)
