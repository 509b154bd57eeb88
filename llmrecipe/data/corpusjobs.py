"""Exact and near dedup as shuffles: stages of jobs that each hold one shard or one partition, never the corpus.

A pass's shard jobs observe their documents and write them as records partitioned by key (llmrecipe.data.shuffle):
content keys for exact dedup, band keys for near dedup. Then, run by the same engine as the shard jobs:

1. scatter (only for an op that decides among an earlier op's survivors): each shard's saved keys, less the rows
   the earlier ops drop, partitioned;
2. decide, per key partition: exact dedup's groups give (dropped, kept) pairs; near dedup's buckets give
   candidate pairs, partitioned by pair;
3. near only, verify, per pair partition: each distinct candidate pair judged by its documents' signatures (or
   shingle sets), read by position from the shards' side files;
4. near only, components: one job joins the similar pairs into clusters, each keeping its earliest document.
   Only documents in a similar pair take part: its memory follows the duplicates, not the corpus;
5. resolve, per shard: the ids of the documents kept in the dropped ones' place (for dropped.parquet's
   `duplicate_of`), written to the dropped documents' shards.

The next pass's job for a shard reads that shard's drops (`shard_drops`) and applies them. Every job writes its
files, renamed into place, then its marker (`done/`): a re-run skips finished jobs, and a job run twice writes the
same files. Once an op has decided, its `decided.json` is written and all but its drops are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from llmrecipe.data.dedup import (Decision, ExactDedup, NearDedup, Observation, components_of, pair_partition,
                                  save_sides, similar_pairs, unique_pairs)
from llmrecipe.data.ops import CORPUS_OPS
from llmrecipe.data.shuffle import position, read_partition, row_of, shard_of, write_partitioned
from llmrecipe.data.words import WordHashes
from llmrecipe.recipe.data import DataOp


@dataclass
class Observing:
    """A corpus op a pass's shard jobs observe for, and where its files go."""

    op: DataOp
    folder: Path
    partitions: int
    """Key partitions (and pair partitions): the decide and verify stages' jobs."""
    scatter: bool
    """Partition the keys in the shard job; else save them for a scatter job, which first removes the rows an
    earlier op of the same pass drops."""

    def observe(self, shard: int, text: pl.Series, words: WordHashes | None) -> None:
        seen: Observation = CORPUS_OPS[self.op.op].observation(self.op, text, words)
        save_sides(self.folder, shard, seen.sides)
        if self.scatter:
            scatter(self, shard, seen.keys, np.arange(len(text)))
        else:
            save_array(self.folder / f"observed-{shard:06d}.npy", seen.keys)


def scatter(observing: Observing, shard: int, keys: np.ndarray, rows: np.ndarray) -> None:
    """The records of rows `rows` of shard `shard` (their `keys`), partitioned by key."""
    records, key = CORPUS_OPS[observing.op.op].records(observing.op, keys, position(shard, rows))
    write_partitioned(keys_path(observing.folder, shard), records, partition_of(key, observing.partitions),
                      observing.partitions)


def keys_path(folder: Path, shard: int) -> Path:
    return folder / f"keys-{shard:06d}.part"


def partition_of(key: np.ndarray, partitions: int) -> np.ndarray:
    return (key % np.uint64(partitions)).astype(np.int64)


def save_array(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")  # a retried task may write it at once
    np.save(partial, array)
    partial.replace(path)


@dataclass
class Deciding:
    """One op's decision over the shards a pass observed."""

    observing: Observing
    shards: int
    """Jobs of the observing pass: shard numbers are below it."""
    targets: dict[int, Path]
    """The observed shards that hold documents, by number."""
    earlier: list[Path]
    """Decision folders of the pass's ops before this one: their drops are not this op's to decide on."""

    @property
    def folder(self) -> Path:
        return self.observing.folder

    def stages(self) -> list[list["StageJob"]]:
        """The jobs of each stage, in order; a stage starts when the one before it has finished."""
        partitions = range(self.observing.partitions)
        stages: list[list[StageJob]] = []
        if not self.observing.scatter:
            stages.append([ScatterJob(self, shard) for shard in self.targets])
        stages.append([DecideJob(self, partition) for partition in partitions])
        if self.observing.op.op == "dedup_near":
            stages += [[VerifyJob(self, partition) for partition in partitions], [ComponentsJob(self)]]
        stages.append([ResolveJob(self, shard) for shard in self.targets])
        return stages

    def drop_files(self) -> list[Path]:
        if self.observing.op.op == "dedup_near":
            return [self.folder / "drops-components.part"]
        return [self.folder / f"drops-{partition:06d}.part" for partition in range(self.observing.partitions)]

    def run(self, run_stage: Callable[[list["StageJob"]], None]) -> None:
        """Every stage run by `run_stage` (unless a killed run finished them), then the op's files but its drops
        removed."""
        marker = self.folder / "decided.json"
        if marker.exists():
            return
        for jobs in self.stages():
            run_stage([job for job in jobs if not job.done()])
        marker.write_text(json.dumps({"shards": self.shards}))
        for path in self.folder.iterdir():
            if path.name not in ("decided.json", "resolved"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


class StageJob:
    """A job of a dedup stage: `run` writes its files and then its marker."""

    deciding: Deciding
    name: str

    def done(self) -> bool:
        return self.marker().exists()

    def marker(self) -> Path:
        return self.deciding.folder / "done" / self.name

    def run(self) -> int:
        """Runs the job (each kind's `work`); returns how many records it held at once (for the log and the tests
        of memory bounds)."""
        held = self.work()
        self.marker().parent.mkdir(exist_ok=True)
        self.marker().write_text(str(held))
        return held


@dataclass
class ScatterJob(StageJob):
    """One shard's saved keys, less the rows the pass's earlier ops drop, partitioned."""

    deciding: Deciding
    shard: int

    @property
    def name(self) -> str:
        return f"scatter-{self.shard:06d}"

    def work(self) -> int:
        path = self.deciding.folder / f"observed-{self.shard:06d}.npy"
        keys = np.load(path)
        keep = np.ones(len(keys), dtype=bool)
        for folder in self.deciding.earlier:
            keep[shard_drops(folder, self.shard)[0]] = False
        rows = np.flatnonzero(keep)
        scatter(self.deciding.observing, self.shard, keys[rows], rows)
        return len(keys)


@dataclass
class DecideJob(StageJob):
    """One key partition's records from every shard: exact dedup's drops, or near dedup's candidate pairs."""

    deciding: Deciding
    partition: int

    @property
    def name(self) -> str:
        return f"decide-{self.partition:06d}"

    def work(self) -> int:
        deciding = self.deciding
        kind = CORPUS_OPS[deciding.observing.op.op]
        paths = [keys_path(deciding.folder, shard) for shard in range(deciding.shards)]
        records = read_partition(paths, self.partition, kind.width)
        if kind is ExactDedup:
            drops = ExactDedup.decided(records)
            write_partitioned(deciding.folder / f"drops-{self.partition:06d}.part", drops, shard_of(drops[:, 1]),
                              deciding.shards)
        else:
            pairs = NearDedup.candidate_pairs(records)
            write_partitioned(deciding.folder / f"pairs-{self.partition:06d}.part", pairs,
                              partition_of(pair_partition(pairs), deciding.observing.partitions),
                              deciding.observing.partitions)
        return len(records)


@dataclass
class VerifyJob(StageJob):
    """The distinct candidate pairs of one pair partition, judged; the similar ones written."""

    deciding: Deciding
    partition: int

    @property
    def name(self) -> str:
        return f"verify-{self.partition:06d}"

    def work(self) -> int:
        folder = self.deciding.folder
        found = read_partition([folder / f"pairs-{p:06d}.part" for p in range(self.deciding.observing.partitions)],
                               self.partition, 2)
        pairs = unique_pairs(found)  # a pair found in several bands' buckets is judged once
        similar = pairs[similar_pairs(self.deciding.observing.op, folder, pairs)]
        write_partitioned(folder / f"edges-{self.partition:06d}.part", similar, np.zeros(len(similar), dtype=np.int64), 1)
        return len(found)


@dataclass
class ComponentsJob(StageJob):
    """The similar pairs joined into clusters; each drop written to its kept document's shard's partition."""

    deciding: Deciding
    name: str = "components"

    def work(self) -> int:
        folder = self.deciding.folder
        edges = read_partition([folder / f"edges-{p:06d}.part" for p in range(self.deciding.observing.partitions)], 0, 2)
        drops = components_of(edges)
        write_partitioned(folder / "drops-components.part", drops, shard_of(drops[:, 1]), self.deciding.shards)
        return len(edges)


@dataclass
class ResolveJob(StageJob):
    """The drops whose kept document is in shard `shard`: that document's id looked up, each drop written to its
    own shard's file."""

    deciding: Deciding
    shard: int

    @property
    def name(self) -> str:
        return f"resolve-{self.shard:06d}"

    def work(self) -> int:
        drops = read_partition(self.deciding.drop_files(), self.shard, 2)
        if not len(drops):
            return 0
        ids = pl.read_parquet(self.deciding.targets[self.shard], columns=["id"])["id"]
        kept_ids = ids.gather(row_of(drops[:, 1]))
        owner = shard_of(drops[:, 0])
        for shard in np.unique(owner).tolist():
            mine = owner == shard
            write_drops(resolved_path(self.deciding.folder, shard, self.shard), row_of(drops[mine, 0]),
                        kept_ids.filter(pl.Series(mine)))
        return len(drops)


def resolved_path(folder: Path, owner: int, resolver: int) -> Path:
    """Where the resolve job of shard `resolver` writes the drops it found in shard `owner`: a folder per owner, so
    a shard's drops are listed without scanning every shard's."""
    return folder / "resolved" / f"{owner:06d}" / f"{resolver:06d}.parquet"


def write_drops(path: Path, rows: np.ndarray, duplicate_of: pl.Series) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    pl.DataFrame({"row": rows, "duplicate_of": duplicate_of}, schema={"row": pl.Int64, "duplicate_of": pl.String}
                 ).write_parquet(partial, compression="uncompressed")
    partial.replace(path)


def shard_drops(folder: Path, shard: int) -> tuple[np.ndarray, pl.Series]:
    """The rows of shard `shard` the decision in `folder` drops (ascending), and the id of the document kept in
    each one's place."""
    paths = sorted(resolved_path(folder, shard, 0).parent.glob("*.parquet"))
    if not paths:
        return np.zeros(0, dtype=np.int64), pl.Series("duplicate_of", [], dtype=pl.String)
    drops = pl.concat([pl.read_parquet(path) for path in paths]).sort("row")
    return drops["row"].to_numpy(), drops["duplicate_of"]


class InProcessDedup:
    """A dedup op run through its stages in this process over batches handed to `observe` (each one shard):
    the pipeline's mechanism on its own, for a caller with texts in hand. Its ids are the documents' positions."""

    def __init__(self, op: DataOp, work: Path, partitions: int = 3):
        self.work = work
        self.observing = Observing(op, work / "op", partitions, scatter=False)  # `decide` may exclude rows
        self.observing.folder.mkdir(parents=True)
        self.sizes: list[int] = []

    def observe(self, text: pl.Series) -> None:
        shard = len(self.sizes)
        self.sizes.append(len(text))
        if len(text):
            self.observing.observe(shard, text, None)
            ids = pl.Series("id", position(shard, np.arange(len(text)))).cast(pl.String)
            pl.DataFrame({"id": ids}).write_parquet(self.work / f"shard-{shard:06d}.parquet")

    def decide(self, among: np.ndarray | None = None) -> Decision:
        """bool per observed document and the observed index of each dropped one's keeper; with `among` (bool per
        observed document), deciding among those only: the others are kept."""
        offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        excluded = self.work / "among"
        if among is not None:
            for shard, start in enumerate(offsets[:-1].tolist()):
                rows = np.flatnonzero(~among[start : start + self.sizes[shard]])
                write_drops(resolved_path(excluded, shard, 0), rows, pl.Series([None] * len(rows), dtype=pl.String))
        targets = {shard: self.work / f"shard-{shard:06d}.parquet" for shard, size in enumerate(self.sizes) if size}
        Deciding(self.observing, len(self.sizes), targets, [excluded]).run(lambda jobs: [job.run() for job in jobs])
        keep = np.ones(int(offsets[-1]), dtype=bool)
        duplicate_of = np.full(len(keep), -1, dtype=np.int64)
        for shard in range(len(self.sizes)):
            rows, kept = shard_drops(self.observing.folder, shard)
            kept_at = kept.cast(pl.UInt64).to_numpy()
            keep[offsets[shard] + rows] = False
            duplicate_of[offsets[shard] + rows] = offsets[shard_of(kept_at)] + row_of(kept_at)
        shutil.rmtree(self.observing.folder)
        shutil.rmtree(excluded, ignore_errors=True)
        for target in targets.values():
            target.unlink()
        return Decision(keep, duplicate_of, CORPUS_OPS[self.observing.op.op].reason)
