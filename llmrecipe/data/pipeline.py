"""The data pipeline, streamed: sources -> shards on disk -> passes of ops -> train/val/test.

Memory stays bounded by the batch size: documents live in Parquet shards of about `batch_mb` of text in
a work folder, and each pass reads one shard, applies the document ops, and writes it back. A corpus op
(dedup) is a barrier: it observes every shard during a pass (keeping compact keys), decides once, and the
next pass applies its decision while reading the shards again. Worker processes run the shards of a pass
(llmrecipe.data.shardwork); this process reads the sources, merges their results in shard order, decides,
and merges the split parts into train/val/test by streaming.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from llmrecipe.data.dedup import Decision
from llmrecipe.data.ledger import Ledger, Stage
from llmrecipe.data.mismatch import SplitProfile, mismatch_report
from llmrecipe.data.ops import CORPUS_OPS, HINTS
from llmrecipe.data.read import BLOCK_BYTES, Reader, SourceLog, document_schema
from llmrecipe.data.shardwork import PendingSlice, ShardJob, ShardResult, stage_label
from llmrecipe.data.split import SPLITS, fixed_bounds, positions, stratified_bounds
from llmrecipe.data.workers import Workers
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.plan.specs import DataSpec
from llmrecipe.recipe.data import DataOp


@dataclass
class Pending:
    """A corpus-wide decision waiting to be applied on the next read of the shards."""

    stage: Stage
    decision: Decision


@dataclass
class Shard:
    """A Parquet file of documents in the work folder; `rows` documents, in corpus order after the previous
    shard's."""

    path: Path
    rows: int


@dataclass
class Outcome:
    sources: list[SourceLog]
    ledger: Ledger
    split_docs: dict[str, int]
    split_chars: dict[str, int]
    mismatch: dict


class Pipeline:
    def __init__(self, spec: DataSpec, external: list[ExternalFile], work: Path, downloads: Path | None,
                 log: Callable[[str], None]):
        self.spec = spec
        self.external = external
        self.work = work
        self.downloads = downloads
        self.log = log
        self.metadata = sorted({name for source in spec.sources for name in source.metadata})
        self.schema = document_schema(self.metadata)
        self.batch_bytes = spec.batch_mb << 20
        self.ledger = Ledger(work)
        self.workers = Workers(spec.workers)
        self._shard_count = 0

    def run(self, out_dir: Path) -> Outcome:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        try:
            return self._run(out_dir)
        finally:
            self.workers.close()

    def _run(self, out_dir: Path) -> Outcome:
        shards, sources = self.read_sources()
        if not sum(s.docs for s in sources):
            bad = sum(sum(s.bad_records.values()) for s in sources)
            raise StepError(
                f"the sources gave no documents ({sum(s.files for s in sources)} files read, {bad} bad records); "
                "check that the files hold text and that `unit`, `format` and `text_field` fit them"
            )
        pending = self.mixing(shards, sources)
        for index, op in enumerate(self.spec.ops):
            if op.op in CORPUS_OPS:
                shards, pending = self.corpus_pass(shards, pending, index, op)
        outcome = self.write_splits(shards, pending, out_dir)
        self.ledger.write_dropped(out_dir / "dropped.parquet")
        shutil.rmtree(self.work, ignore_errors=True)
        outcome.sources = sources
        return outcome

    # reading

    def read_sources(self) -> tuple[list[Shard], list[SourceLog]]:
        groups: list[list[ExternalFile]] = [[] for _ in self.spec.sources]
        for file in self.external:
            if not 0 <= file.source < len(groups):
                raise StepError(f"file {file.path} belongs to source {file.source}, but the step has {len(groups)}; re-plan")
            groups[file.source].append(file)
        readers = [Reader(source, index, self.spec.on_bad_record, self.metadata, self.downloads,
                          block_bytes=min(BLOCK_BYTES, self.batch_bytes))
                   for index, source in enumerate(self.spec.sources)]
        frames = (frame for reader, files in zip(readers, groups) for frame in reader.documents(files))
        shards = [self.write_shard(batch) for batch in self.rebatched(frames)]
        for reader in readers:
            self.log(f"sources[{reader.index}]: {reader.log.docs} documents from {reader.log.files} files"
                     + (f", {sum(reader.log.bad_records.values())} bad records skipped" if reader.log.bad_records else ""))
        return shards, [reader.log for reader in readers]

    def rebatched(self, frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        """Frames regrouped into batches of about `batch_bytes` of text."""
        held, size = [], 0
        for frame in frames:
            held.append(frame)
            size += int(frame["text"].str.len_bytes().sum())
            if size >= self.batch_bytes:
                yield pl.concat(held)
                held, size = [], 0
        if held:
            yield pl.concat(held)

    def next_path(self) -> Path:
        path = self.work / f"shard-{self._shard_count:06d}.parquet"
        self._shard_count += 1
        return path

    def write_shard(self, frame: pl.DataFrame) -> Shard:
        path = self.next_path()
        frame.write_parquet(path, compression="uncompressed")  # read back once, soon: speed over size
        return Shard(path, len(frame))

    # passes

    def jobs(self, shards: list[Shard], pending: Pending | None, ops: list[tuple[int, DataOp]],
             observe: DataOp | None = None, split_bounds: dict | None = None) -> Iterator[ShardJob]:
        """One job per shard, each with its slice of the pending decision."""
        replacement = self.replacement_ids(shards, pending)
        offset = 0
        for shard in shards:
            piece = None
            if pending is not None:
                rows = slice(offset, offset + shard.rows)
                keep = pending.decision.keep[rows]
                duplicates = None
                if replacement is not None:
                    duplicates = replacement(pending.decision.duplicate_of[rows][~keep])
                piece = PendingSlice(pending.stage.label, pending.stage.op, pending.decision.reason, keep, duplicates)
            offset += shard.rows
            yield ShardJob(shard.path, self.next_path(), piece, ops, observe, split_bounds)

    def run_jobs(self, jobs: Iterator[ShardJob]) -> Iterator[tuple[ShardJob, ShardResult]]:
        """Each job with its result, in shard order, its ledger part merged."""
        jobs = list(jobs)
        for job, result in zip(jobs, self.workers.run(iter(jobs), len(jobs))):
            self.ledger.merge(result.ledger)
            yield job, result

    def replacement_ids(self, shards: list[Shard], pending: Pending | None) -> Callable[[np.ndarray], pl.Series] | None:
        """When the pending decision names which document replaced each dropped one (dedup): a lookup from
        those documents' row numbers to their ids, so the report can say `duplicate_of`. Only the ids of
        documents that replaced another are kept in memory."""
        if pending is None or not (pending.decision.duplicate_of >= 0).any():
            return None
        wanted = np.unique(pending.decision.duplicate_of[pending.decision.duplicate_of >= 0])
        found, offset = [], 0
        for shard in shards:
            local = wanted[(wanted >= offset) & (wanted < offset + shard.rows)] - offset
            if len(local):
                found.append(pl.read_parquet(shard.path, columns=["id"])["id"].gather(local))
            offset += shard.rows
        ids = pl.concat(found)
        return lambda rows: ids.gather(np.searchsorted(wanted, rows))

    # mixing

    def mixing(self, shards: list[Shard], sources: list[SourceLog]) -> Pending | None:
        """When sources have weights: which documents the mix keeps, as a pending decision."""
        if self.spec.mix_seed is None:
            return None
        weights = np.array([s.weight if s.weight is not None else 1.0 for s in self.spec.sources])
        have = np.array([s.docs for s in sources], dtype=np.float64)
        share = weights / weights.sum()
        total = np.min(np.where(have > 0, have / share, np.inf))
        quota = np.floor(total * share + 1e-9).astype(np.int64)
        frames = [pl.read_parquet(shard.path, columns=["id", "source"]) for shard in shards]
        ids = pl.concat(frames)
        draw = ids["id"].hash(seed=self.spec.mix_seed).to_numpy()
        source = ids["source"].to_numpy()
        keep = np.zeros(len(ids), dtype=bool)
        for index, wanted in enumerate(quota):
            rows = np.flatnonzero(source == index)
            if wanted > 0:
                keep[rows[np.argsort(draw[rows], kind="stable")[:wanted]]] = True
        self.log("mix: " + ", ".join(f"sources[{i}] {q} of {int(h)}" for i, (q, h) in enumerate(zip(quota, have))))
        decision = Decision(keep, np.full(len(keep), -1), "mixing")
        return Pending(self.ledger.stage("mix", "mix"), decision)

    # ops

    def ops_before(self, index: int) -> list[tuple[int, DataOp]]:
        """The document ops between the previous corpus op (or the start) and ops[index]."""
        found = []
        for k in range(index - 1, -1, -1):
            if self.spec.ops[k].op in CORPUS_OPS:
                break
            found.insert(0, (k, self.spec.ops[k]))
        return found

    def stages_for(self, document_ops: list[tuple[int, DataOp]]) -> None:
        for index, op in document_ops:
            self.ledger.stage(stage_label(index, op), op.op)

    def corpus_pass(self, shards: list[Shard], pending: Pending | None, index: int, op: DataOp):
        document_ops = self.ops_before(index)
        corpus = CORPUS_OPS[op.op](op, self.work)
        self.stages_for(document_ops)
        out = []
        for job, result in self.run_jobs(self.jobs(shards, pending, document_ops, observe=op)):
            if result.rows:
                corpus.absorb(result.observation)
                out.append(Shard(job.target, result.rows))
        self.check_not_empty()
        stage = self.ledger.stage(stage_label(index, op), op.op)
        self.log(f"ops[{index}] {op.op}: deciding over the whole corpus")
        return out, Pending(stage, corpus.decide())

    def check_not_empty(self) -> None:
        """After a pass: the first stage that let nothing through removed the last documents."""
        for stage in self.ledger.stages:
            if stage.docs_in and not stage.docs_out:
                raise StepError(f"{stage.label} removed the last {stage.docs_in} documents; {HINTS.get(stage.op, '')}")

    # splits

    def write_splits(self, shards: list[Shard], pending: Pending | None, out_dir: Path) -> Outcome:
        """The last pass: the pending decision and the trailing document ops applied, documents cut into split
        parts, then each split's parts merged into one file by streaming."""
        document_ops = self.ops_before(len(self.spec.ops))
        bounds = fixed_bounds(self.spec.split, range(len(self.spec.sources)))
        if self.spec.split.stratify:
            if pending is not None or document_ops:
                shards, pending = self.document_pass(shards, pending, document_ops), None
                document_ops = []
            bounds = stratified_bounds(*self.positions_by_source(shards), self.spec.split)
        self.stages_for(document_ops)
        self.log("splitting")
        parts: dict[str, list[Path]] = {name: [] for name in SPLITS}
        profiles = {name: SplitProfile() for name in SPLITS}
        for _, result in self.run_jobs(self.jobs(shards, pending, document_ops, split_bounds=bounds)):
            for name, path in result.parts.items():
                parts[name].append(path)
                profiles[name].merge(result.profiles[name])
        self.check_not_empty()
        self.workers.close()  # their memory is not needed while the parts are merged
        self.log("writing train/val/test")
        for name in SPLITS:
            target = out_dir / f"{name}.parquet"
            if parts[name]:
                # Row groups of about one batch: the writer holds a row group in memory, and by default makes
                # them so large that merging a big corpus would hold most of it.
                mean_bytes = max(profiles[name].chars / max(profiles[name].docs, 1), 1.0)
                rows = int(min(max(self.batch_bytes / mean_bytes, 1), 1 << 17))
                pl.scan_parquet(parts[name], low_memory=True).sink_parquet(target, row_group_size=rows)
            else:
                pl.DataFrame(schema=self.schema).write_parquet(target)
        return Outcome(
            sources=[], ledger=self.ledger,
            split_docs={name: profiles[name].docs for name in SPLITS},
            split_chars={name: profiles[name].chars for name in SPLITS},
            mismatch=mismatch_report(profiles),
        )

    def document_pass(self, shards: list[Shard], pending: Pending | None, document_ops: list[tuple[int, DataOp]]) -> list[Shard]:
        """The pending decision and `document_ops` applied and written out (so a later pass can read twice)."""
        self.stages_for(document_ops)
        out = [Shard(job.target, result.rows)
               for job, result in self.run_jobs(self.jobs(shards, pending, document_ops)) if result.rows]
        self.check_not_empty()
        return out

    def positions_by_source(self, shards: list[Shard]) -> tuple[np.ndarray, np.ndarray]:
        """Every document's source and split position, read a shard at a time (8 bytes each in memory)."""
        sources, found = [np.zeros(0, dtype=np.int32)], [np.zeros(0)]
        for shard in shards:
            frame = pl.read_parquet(shard.path, columns=["text", "source"])
            sources.append(frame["source"].to_numpy())
            found.append(positions(frame["text"]))
        return np.concatenate(sources), np.concatenate(found)
