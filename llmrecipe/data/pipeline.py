"""The data pipeline, streamed: sources -> shards on disk -> passes of ops -> train/val/test.

Memory stays bounded by the batch size: documents live in Parquet shards of about `batch_mb` of text in
a work folder, and each pass reads one shard, applies the document ops, and writes it back. A corpus op
(dedup) is a barrier: every shard job of a pass observes its documents (writing their keys partitioned by hash),
the op decides in stages of partition jobs (llmrecipe.data.corpusjobs), and the next pass applies each shard's
drops while reading the shards again; consecutive corpus ops (dedup_exact then dedup_near) are observed in one
pass and decide one after the other, each among the previous one's survivors. Worker processes or Ray tasks run the
jobs (llmrecipe.data.shardwork, corpusjobs), the first pass's as soon as their shards are read; this process reads
the sources, merges the shard jobs' results in shard order, and merges the split parts into train/val/test by
streaming. It holds no per-document state of the corpus.

Resume: the work folder survives a crash. Each job's result is saved with its output (a job whose result
exists is not run again), the reading's shard list and source logs are saved once reading ends, a mix's cutoffs
once found, each dedup stage's jobs and decisions as they finish, and each pass's output shard list once the pass
is complete (then its input shards are deleted). A re-run replays the same steps in the same order, loading what was saved: the same bytes as
an uninterrupted run, without redoing finished work.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import polars as pl

from llmrecipe.data.corpusjobs import Deciding, Observing, StageJob
from llmrecipe.data.mixing import CandidateJob, CountJob, cutoffs, deciding_buckets
from llmrecipe.data.ledger import Ledger, Stage
from llmrecipe.data.mismatch import SplitProfile, mismatch_report
from llmrecipe.data.ops import CORPUS_OPS, HINTS
from llmrecipe.data.read import BLOCK_BYTES, SourceLog, document_schema
from llmrecipe.data.readjobs import Block, ReadJob, ReadResult, merged_log, read_jobs
from llmrecipe.data.shardwork import (PendingSlice, ShardJob, ShardResult, load_result, result_path, stage_label,
                                      words_path)
from llmrecipe.data.split import SPLITS, fixed_bounds, positions, stratified_bounds
from llmrecipe.data.workers import engine_workers
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.plan.specs import DataSpec
from llmrecipe.recipe.data import DataOp


WORK_LAYOUT = 4
"""Version of the work folder's files; a work folder of another version (or batch size) is started afresh."""
RANGE_BATCHES = 4
"""Batches of text per byte range of a large JSONL file, each read by its own job: enough ranges that the workers
share one big file, few enough that each job's start (finding its first line) is negligible."""
PARTITION_BATCHES = 16
"""Batches of source text per dedup key partition. A partition job holds its records: 32 bytes per document for
exact dedup, 24 per document and band for near dedup (11 MB for 16 batches of 8 MB of 4 KB documents at 14
bands), a small share of a shard job's memory; fewer, larger partitions mean fewer partitioned reads."""


@dataclass
class Pending:
    """A corpus-wide decision waiting to be applied on the next read of the shards: a dedup decision's folder of
    drops per shard, or a mix's seed and cutoffs."""

    stage: Stage
    reason: str
    folder: Path | None = None
    mix: tuple[int, list] | None = None


@dataclass
class Shard:
    """Parquet files of documents in the work folder (several blocks as read, or a pass's one output); `rows`
    documents, in corpus order after the previous shard's."""

    files: list[Path]
    rows: int
    words: bool = False
    """Its documents' lower-cased word buckets are saved next to it (shardwork.save_words)."""
    number: int = 0
    """Its place among the shards of the pass that wrote it (a dedup decision names its documents by it)."""

    @property
    def path(self) -> Path:
        """A pass's output shard: its one file."""
        return self.files[0]


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
        self.workers = engine_workers(spec.engine, spec.workers, spec.ray_address, spec.batch_mb)
        self.partitions = max(2, math.ceil(sum(file.size for file in external) / (PARTITION_BATCHES * self.batch_bytes)))
        """Key partitions of each dedup op (the sources' size sets it, not the worker count: a resumed run finds
        the same partitions)."""
        self._pass_count = 0
        self._pass_inputs: list[Shard] = []
        """The shards the current pass reads (deleted when it is complete)."""

    def run(self, out_dir: Path) -> Outcome:
        self.prepare_work()
        try:
            return self._run(out_dir)
        finally:
            self.workers.close()

    def prepare_work(self) -> None:
        """Keep a killed run's work folder when it was made the same way; else start afresh."""
        layout = {"layout": WORK_LAYOUT, "batch_mb": self.spec.batch_mb}
        marker = self.work / "layout.json"
        if marker.exists() and json.loads(marker.read_text()) == layout:
            done = sum(1 for _ in self.work.glob("*.result"))
            if done:
                self.log(f"resuming: {done} finished shard jobs kept")
            return
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        marker.write_text(json.dumps(layout))

    def _run(self, out_dir: Path) -> Outcome:
        shards, sources = self.read_sources()
        if self.spec.mix_seed is not None:  # mixing draws from every shard: read them all first
            shards = list(shards)
        pending = self.mixing(shards, sources)
        for group in self.corpus_groups():
            shards, pending = self.corpus_pass(shards, pending, group)
        outcome = self.write_splits(shards, pending, out_dir)
        self.ledger.write_dropped(out_dir / "dropped.parquet")
        shutil.rmtree(self.work, ignore_errors=True)
        outcome.sources = sources
        return outcome

    # reading

    def read_sources(self) -> tuple[Iterator[Shard], list[SourceLog]]:
        """The shards the sources make, as their read jobs finish (so the first pass can work on the first shards
        while later files are read), and the sources' logs, complete once the shards are. After a killed run that
        had read everything: the shards and logs it saved."""
        saved = self.work / "read.json"
        if saved.exists():
            read = json.loads(saved.read_text())
            return iter([Shard([self.work / name for name in names], rows, number=number)
                         for number, (names, rows) in enumerate(read["shards"])]), [
                SourceLog.from_dict(log) for log in read["sources"]]
        groups: list[list[ExternalFile]] = [[] for _ in self.spec.sources]
        for file in self.external:
            if not 0 <= file.source < len(groups):
                raise StepError(f"file {file.path} belongs to source {file.source}, but the step has {len(groups)}; re-plan")
            groups[file.source].append(file)
        jobs = read_jobs(self.spec.sources, groups, RANGE_BATCHES * self.batch_bytes, folder=self.work,
                         policy=self.spec.on_bad_record, metadata=self.metadata, downloads=self.downloads,
                         block_bytes=min(BLOCK_BYTES, self.batch_bytes))
        logs: list[SourceLog] = []
        return self.shards_read(jobs, logs), logs

    def shards_read(self, jobs: list[ReadJob], logs: list[SourceLog]) -> Iterator[Shard]:
        """The read jobs' blocks grouped into shards in job order; `logs` filled with each source's log at the end."""
        if len(jobs) > 1:
            self.workers.start()
        by_source: list[list[SourceLog]] = [[] for _ in self.spec.sources]

        def blocks() -> Iterator[Block]:
            for job, result in self.read_results(jobs):
                by_source[job.index].append(result.log)
                yield from result.blocks

        written = []
        for files, rows in self.rebatched(blocks()):
            written.append(Shard(files, rows, number=len(written)))
            yield written[-1]
        logs.extend(merged_log(found) for found in by_source)
        for log in logs:
            self.log(f"sources[{log.source}]: {log.docs} documents from {log.files} files"
                     + (f", {sum(log.bad_records.values())} bad records skipped" if log.bad_records else ""))
        if not sum(s.docs for s in logs):
            bad = sum(sum(s.bad_records.values()) for s in logs)
            raise StepError(
                f"the sources gave no documents ({sum(s.files for s in logs)} files read, {bad} bad records); "
                "check that the files hold text and that `unit`, `format` and `text_field` fit them"
            )
        save_json(self.work / "read.json", {"shards": [[[f.name for f in s.files], s.rows] for s in written],
                                            "sources": [s.as_dict() for s in logs]})

    def read_results(self, jobs: list[ReadJob]) -> Iterator[tuple[ReadJob, ReadResult]]:
        """Each read job with its result (saved by a killed run, or run now), in job order."""
        saved = [job.saved() for job in jobs]
        running = self.workers.run(job for job, done in zip(jobs, saved) if done is None)
        for job, done in zip(jobs, saved):
            yield (job, done) if done is not None else next(running)

    def rebatched(self, blocks: Iterator[Block]) -> Iterator[tuple[list[Path], int]]:
        """Blocks regrouped into shards of about `batch_bytes` of text: each shard's block files and documents."""
        held, rows, size = [], 0, 0
        for block in blocks:
            held.append(block.path)
            rows += block.rows
            size += block.text_bytes
            if size >= self.batch_bytes:
                yield held, rows
                held, rows, size = [], 0, 0
        if held:
            yield held, rows

    def target_path(self, pass_number: int, index: int) -> Path:
        """What the job of pass `pass_number` (from 1) on the pass's `index`th input shard writes: named by
        position, not by the order jobs happened to be made in, so a re-run finds the same names."""
        return self.work / f"pass{pass_number}-{index:06d}.parquet"

    # passes

    def jobs(self, shards: Iterable[Shard], pending: list[Pending], ops: list[tuple[int, DataOp]],
             observe: list[Observing] | None = None, split_bounds: dict | None = None,
             save_words: bool = False) -> Iterator[ShardJob]:
        """One job per shard of a new pass, each with its slices of the pending decisions. Shards may still be
        being read when there is no pending decision (one needs them all). A job done by a killed run is made
        without its slices: it is not run again."""
        self._pass_count += 1  # now, not when the jobs are first asked for: pass_marker() names this pass
        self._pass_inputs = []
        return self._jobs(self._pass_count, shards, pending, ops, observe, split_bounds, save_words)

    def _jobs(self, pass_number: int, shards: Iterable[Shard], pending: list[Pending], ops: list[tuple[int, DataOp]],
              observe: list[Observing] | None, split_bounds: dict | None, save_words: bool) -> Iterator[ShardJob]:
        for index, shard in enumerate(shards):
            self._pass_inputs.append(shard)
            target = self.target_path(pass_number, index)
            reuse_words = shard.words and split_bounds is not None and not ops
            job = ShardJob(shard.files, target, [], ops, index, observe or [], split_bounds, save_words, reuse_words)
            if not result_path(target).exists():
                job.pending = [PendingSlice(decided.stage.label, decided.stage.op, decided.reason, shard.number,
                                            decided=decided.folder, mix=decided.mix) for decided in pending]
            yield job

    def run_jobs(self, jobs: Iterator[ShardJob]) -> Iterator[tuple[ShardJob, ShardResult]]:
        """Each job with its result (run now, or saved by a killed run), in shard order, its ledger part merged."""
        done: list[ShardJob] = []

        def to_run() -> Iterator[ShardJob]:
            for job in jobs:
                if result_path(job.target).exists():
                    done.append(job)
                else:
                    yield job

        # jobs done earlier are answered in place, in order, between the jobs that run
        ordered = self._in_order(self.workers.run(to_run()), done)
        for job, result in ordered:
            self.ledger.merge(result.ledger)
            yield job, result

    @staticmethod
    def _in_order(running: Iterator[tuple[ShardJob, ShardResult]], done: list[ShardJob]):
        """Results of the jobs that ran, with those of jobs done earlier put back in their place (jobs are made in
        order, so each done job precedes the running job made after it)."""
        for job, result in running:
            while done and done[0].target < job.target:
                earlier = done.pop(0)
                yield earlier, load_result(result_path(earlier.target))
            yield job, result
        for earlier in done:
            yield earlier, load_result(result_path(earlier.target))

    def finish_pass(self, out: list[Shard]) -> None:
        """A pass is complete: its output shards are saved as the next pass's input, then its inputs deleted."""
        save_json(self.pass_marker(), [[s.path.name, s.rows, s.words, s.number] for s in out])
        for shard in self._pass_inputs:
            for file in shard.files:
                file.unlink(missing_ok=True)
                words_path(file).unlink(missing_ok=True)

    def pass_marker(self) -> Path:
        return self.work / f"pass{self._pass_count}.json"

    # mixing

    def mixing(self, shards: list[Shard], sources: list[SourceLog]) -> list[Pending]:
        """When sources have weights: which documents the mix keeps, as a pending decision (llmrecipe.data.mixing:
        two rounds of jobs over the shards, then a cutoff per source, saved)."""
        if self.spec.mix_seed is None:
            return []
        weights = np.array([s.weight if s.weight is not None else 1.0 for s in self.spec.sources])
        have = np.array([s.docs for s in sources], dtype=np.float64)
        share = weights / weights.sum()
        total = np.min(np.where(have > 0, have / share, np.inf))
        quota = np.floor(total * share + 1e-9).astype(np.int64)
        self.log("mix: " + ", ".join(f"sources[{i}] {q} of {int(h)}" for i, (q, h) in enumerate(zip(quota, have))))
        stage = self.ledger.stage("mix", "mix")
        saved = self.work / "mix.json"
        if not saved.exists():
            seed, count = self.spec.mix_seed, len(self.spec.sources)
            counts = sum(result for _, result in self.workers.run(CountJob(s.files, seed, count) for s in shards))
            buckets, needed = deciding_buckets(counts, quota)
            found = [np.zeros((0, 3), dtype=np.uint64)]
            if max(buckets) >= 0:
                jobs = (CandidateJob(s.files, seed, s.number, buckets) for s in shards)
                found += [result for _, result in self.workers.run(jobs)]
            save_json(saved, cutoffs(np.concatenate(found), buckets, needed, quota, have))
        return [Pending(stage, "mixing", mix=(self.spec.mix_seed, json.loads(saved.read_text())))]

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

    def corpus_groups(self) -> list[list[int]]:
        """The indices of the corpus ops, consecutive ones (no document op between them) grouped: one pass
        observes a group, and its ops decide one after the other."""
        groups: list[list[int]] = []
        for index, op in enumerate(self.spec.ops):
            if op.op in CORPUS_OPS:
                if groups and groups[-1][-1] == index - 1:
                    groups[-1].append(index)
                else:
                    groups.append([index])
        return groups

    def corpus_pass(self, shards: Iterable[Shard], pending: list[Pending], group: list[int]):
        """One pass observing a group of corpus ops, then their decisions, each op's in stages of jobs: each op
        decides among the documents the ops before it in the group keep."""
        document_ops = self.ops_before(group[0])
        ops = [self.spec.ops[index] for index in group]
        save_words = self.split_reuses_words(group)
        self.stages_for(document_ops)
        observing = [Observing(op, self.work / f"ops-{index}", self.partitions, scatter=not k)
                     for k, (index, op) in enumerate(zip(group, ops))]
        for each in observing:
            each.folder.mkdir(exist_ok=True)
        jobs = self.jobs(shards, pending, document_ops, observe=observing, save_words=save_words)
        out = [Shard([job.target], result.rows, words=save_words, number=job.number)
               for job, result in self.run_jobs(jobs) if result.rows]
        self.check_not_empty()
        targets = {shard.number: shard.path for shard in out}
        decided = []
        for k, (index, op) in enumerate(zip(group, ops)):
            stage = self.ledger.stage(stage_label(index, op), op.op)
            self.log(f"ops[{index}] {op.op}: deciding in {self.partitions} partitions")
            Deciding(observing[k], len(self._pass_inputs), targets, [each.folder for each in observing[:k]]).run(
                self.run_stage)
            decided.append(Pending(stage, CORPUS_OPS[op.op].reason, folder=observing[k].folder))
        self.finish_pass(out)
        return out, decided

    def run_stage(self, jobs: list[StageJob]) -> None:
        """A dedup stage's jobs run (their files are their results)."""
        for _ in self.workers.run(jobs):
            pass

    def split_reuses_words(self, group: list[int]) -> bool:
        """Whether the pass observing `group` should save its documents' lower-cased words for the split
        profiles: when near-dedup splits the texts into them anyway, and the split pass comes next with the
        texts unchanged (no document op after the group, no stratified pass between)."""
        last = group[-1] == max(i for i, op in enumerate(self.spec.ops) if op.op in CORPUS_OPS)
        near = any(self.spec.ops[index].op == "dedup_near" for index in group)
        return last and near and not self.ops_before(len(self.spec.ops)) and not self.spec.split.stratify

    def check_not_empty(self) -> None:
        """After a pass: the first stage that let nothing through removed the last documents. The message has the
        deciding numbers (the step writes no stats.json when it fails): each rule with its setting and how many
        documents it removed."""
        ops = {stage_label(index, op): op for index, op in enumerate(self.spec.ops)}
        for stage in self.ledger.stages:
            if stage.docs_in and not stage.docs_out:
                op = ops.get(stage.label)
                rules = ", ".join(f"{reason}{f' = {getattr(op, reason)}' if hasattr(op, reason) else ''}: {count}"
                                  for reason, count in stage.dropped.most_common())
                raise StepError(f"{stage.label} removed the last {stage.docs_in} documents "
                                f"({stage.chars_in:,} characters) by {rules or 'its rule'}; {HINTS.get(stage.op, '')}")

    # splits

    def write_splits(self, shards: Iterable[Shard], pending: list[Pending], out_dir: Path) -> Outcome:
        """The last pass: the pending decision and the trailing document ops applied, documents cut into split
        parts, then each split's parts merged into one file by streaming."""
        document_ops = self.ops_before(len(self.spec.ops))
        bounds = fixed_bounds(self.spec.split, range(len(self.spec.sources)))
        if self.spec.split.stratify:
            if pending or document_ops:
                shards, pending = self.document_pass(shards, pending, document_ops), []
                document_ops = []
            shards = list(shards)  # read twice: positions first
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
                # zstd's fastest level: about a third less CPU than its default for a slightly larger file
                pl.scan_parquet(parts[name], low_memory=True).sink_parquet(target, row_group_size=rows, compression_level=1)
            else:
                pl.DataFrame(schema=self.schema).write_parquet(target)
        return Outcome(
            sources=[], ledger=self.ledger,
            split_docs={name: profiles[name].docs for name in SPLITS},
            split_chars={name: profiles[name].chars for name in SPLITS},
            mismatch=mismatch_report(profiles),
        )

    def document_pass(self, shards: Iterable[Shard], pending: list[Pending],
                      document_ops: list[tuple[int, DataOp]]) -> list[Shard]:
        """The pending decision and `document_ops` applied and written out (so a later pass can read twice)."""
        self.stages_for(document_ops)
        out = [Shard([job.target], result.rows)
               for job, result in self.run_jobs(self.jobs(shards, pending, document_ops)) if result.rows]
        self.check_not_empty()
        self.finish_pass(out)
        return out

    def positions_by_source(self, shards: list[Shard]) -> tuple[np.ndarray, np.ndarray]:
        """Every document's source and split position, read a shard at a time (8 bytes each in memory)."""
        sources, found = [np.zeros(0, dtype=np.int32)], [np.zeros(0)]
        for shard in shards:
            frame = pl.read_parquet(shard.files, columns=["text", "source"])
            sources.append(frame["source"].to_numpy())
            found.append(positions(frame["text"]))
        return np.concatenate(sources), np.concatenate(found)


def save_json(path: Path, value) -> None:
    """`value` as JSON at `path`, renamed into place (its existence means it is whole)."""
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps(value))
    partial.replace(path)
