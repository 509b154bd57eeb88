"""The data pipeline, streamed: sources -> shards on disk -> passes of ops -> train/val/test.

Memory stays bounded by the batch size: documents live in Parquet shards of about `batch_mb` of text in
a work folder, and each pass reads one shard, applies the document ops, and writes it back. A corpus op
(dedup) is a barrier: it observes every shard during a pass (keeping compact keys), decides once, and the
next pass applies its decision while reading the shards again.
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
from llmrecipe.data.ops import CORPUS_OPS, DOCUMENT_OPS, HINTS
from llmrecipe.data.read import Reader, SourceLog, document_schema
from llmrecipe.data.split import SPLITS, fixed_bounds, positions, split_codes, stratified_bounds
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
        self._shard_count = 0

    def run(self, out_dir: Path) -> Outcome:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
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
        shards, pending = self.document_pass(shards, pending, self.trailing_ops())
        outcome = self.write_splits(shards, pending, out_dir)
        self.ledger.write_dropped(out_dir / "dropped.parquet")
        shutil.rmtree(self.work, ignore_errors=True)
        outcome.sources = sources
        return outcome

    # reading

    def read_sources(self) -> tuple[list[Path], list[SourceLog]]:
        groups: list[list[ExternalFile]] = [[] for _ in self.spec.sources]
        for file in self.external:
            if not 0 <= file.source < len(groups):
                raise StepError(f"file {file.path} belongs to source {file.source}, but the step has {len(groups)}; re-plan")
            groups[file.source].append(file)
        readers = [Reader(source, index, self.spec.on_bad_record, self.metadata, self.downloads)
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

    def write_shard(self, frame: pl.DataFrame) -> Path:
        path = self.work / f"shard-{self._shard_count:06d}.parquet"
        self._shard_count += 1
        frame.write_parquet(path, compression="uncompressed")  # read back once, soon: speed over size
        return path

    def shard_frames(self, shards: list[Path], pending: Pending | None) -> Iterator[pl.DataFrame]:
        """Each shard's documents with the pending decision applied (its drops go to the ledger); shards are
        deleted once read, so the work folder holds one generation at a time."""
        offset = 0
        replacement = self.replacement_ids(shards, pending)
        for path in shards:
            frame = pl.read_parquet(path)
            path.unlink()
            if pending is not None:
                rows = slice(offset, offset + len(frame))
                offset += len(frame)
                keep = pending.decision.keep[rows]
                dropped = frame.filter(pl.Series(~keep)).with_columns(reason=pl.lit(pending.decision.reason))
                if replacement is not None and len(dropped):
                    dropped = dropped.with_columns(duplicate_of=replacement(pending.decision.duplicate_of[rows][~keep]))
                frame_kept = frame.filter(pl.Series(keep))
                self.ledger.passed(pending.stage, frame, frame_kept, dropped)
                frame = frame_kept
            yield frame

    def replacement_ids(self, shards: list[Path], pending: Pending | None) -> Callable[[np.ndarray], pl.Series] | None:
        """When the pending decision names which document replaced each dropped one (dedup): a lookup from
        those documents' row numbers to their ids, so the report can say `duplicate_of`. Only the ids of
        documents that replaced another are kept in memory."""
        if pending is None or not (pending.decision.duplicate_of >= 0).any():
            return None
        wanted = np.unique(pending.decision.duplicate_of[pending.decision.duplicate_of >= 0])
        found, offset = [], 0
        for path in shards:
            ids = pl.read_parquet(path, columns=["id"])["id"]
            local = wanted[(wanted >= offset) & (wanted < offset + len(ids))] - offset
            found.append(ids.gather(local))
            offset += len(ids)
        ids = pl.concat(found)
        return lambda rows: ids.gather(np.searchsorted(wanted, rows))

    # mixing

    def mixing(self, shards: list[Path], sources: list[SourceLog]) -> Pending | None:
        """When sources have weights: which documents the mix keeps, as a pending decision."""
        if self.spec.mix_seed is None:
            return None
        weights = np.array([s.weight if s.weight is not None else 1.0 for s in self.spec.sources])
        have = np.array([s.docs for s in sources], dtype=np.float64)
        share = weights / weights.sum()
        total = np.min(np.where(have > 0, have / share, np.inf))
        quota = np.floor(total * share + 1e-9).astype(np.int64)
        frames = [pl.read_parquet(path, columns=["id", "source"]) for path in shards]
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

    def trailing_ops(self) -> list[tuple[int, DataOp]]:
        return self.ops_before(len(self.spec.ops))

    def corpus_pass(self, shards: list[Path], pending: Pending | None, index: int, op: DataOp):
        document_ops = self.ops_before(index)
        corpus = CORPUS_OPS[op.op](op, self.work)
        stages = self.stages_for(document_ops)
        out = []
        for frame in shard_batches(self.shard_frames(shards, pending)):
            frame = self.apply_document_ops(frame, document_ops, stages)
            corpus.observe(frame["text"])
            out.append(self.write_shard(frame))
        self.check_not_empty()
        stage = self.ledger.stage(f"ops[{index}] {op.op}", op.op)
        self.log(f"ops[{index}] {op.op}: deciding over the whole corpus")
        return out, Pending(stage, corpus.decide())

    def document_pass(self, shards: list[Path], pending: Pending | None, document_ops: list[tuple[int, DataOp]]):
        if not document_ops:
            return shards, pending
        stages = self.stages_for(document_ops)
        out = []
        for frame in shard_batches(self.shard_frames(shards, pending)):
            out.append(self.write_shard(self.apply_document_ops(frame, document_ops, stages)))
        self.check_not_empty()
        return out, None

    def stages_for(self, document_ops: list[tuple[int, DataOp]]) -> list[Stage]:
        return [self.ledger.stage(f"ops[{index}] {op.op}", op.op) for index, op in document_ops]

    def apply_document_ops(self, frame: pl.DataFrame, document_ops: list[tuple[int, DataOp]], stages: list[Stage]):
        for (index, op), stage in zip(document_ops, stages):
            result = DOCUMENT_OPS[op.op](frame, op)
            stage.counters.update({k: v for k, v in result.counters.items() if v})
            if result.drop is None:
                self.ledger.passed(stage, frame, result.frame, result.frame.clear())
                frame = result.frame
                continue
            dropped_rows = result.drop.is_not_null()
            kept = result.frame.filter(~dropped_rows)
            dropped = result.frame.filter(dropped_rows).with_columns(reason=result.drop.filter(dropped_rows))
            self.ledger.passed(stage, frame, kept, dropped)
            frame = kept
        return frame

    def check_not_empty(self) -> None:
        """After a pass: the first stage that let nothing through removed the last documents."""
        for stage in self.ledger.stages:
            if stage.docs_in and not stage.docs_out:
                raise StepError(f"{stage.label} removed the last {stage.docs_in} documents; {HINTS.get(stage.op, '')}")

    # splits

    def write_splits(self, shards: list[Path], pending: Pending | None, out_dir: Path) -> Outcome:
        bounds = fixed_bounds(self.spec.split, range(len(self.spec.sources)))
        if self.spec.split.stratify:
            shards, pending = self.materialized(shards, pending)
            frames = [pl.read_parquet(path, columns=["text", "source"]) for path in shards]
            text = pl.concat([f["text"] for f in frames]) if frames else pl.Series([], dtype=pl.String)
            source = np.concatenate([f["source"].to_numpy() for f in frames]) if frames else np.zeros(0)
            bounds = stratified_bounds(source, positions(text), self.spec.split)
            del frames, text
        self.log("splitting")
        parts: dict[str, list[Path]] = {name: [] for name in SPLITS}
        profiles = {name: SplitProfile() for name in SPLITS}
        for frame in self.shard_frames(shards, pending):
            codes = split_codes(positions(frame["text"]), frame["source"].to_numpy(), bounds)
            for code, name in enumerate(SPLITS):
                part = frame.filter(pl.Series(codes == code))
                if len(part):
                    profiles[name].add(part["text"])
                    parts[name].append(self.write_shard(part))
        self.check_not_empty()
        self.log("writing train/val/test")
        for name in SPLITS:
            target = out_dir / f"{name}.parquet"
            if parts[name]:
                pl.scan_parquet(parts[name]).sink_parquet(target)
            else:
                pl.DataFrame(schema=self.schema).write_parquet(target)
        return Outcome(
            sources=[], ledger=self.ledger,
            split_docs={name: profiles[name].docs for name in SPLITS},
            split_chars={name: profiles[name].chars for name in SPLITS},
            mismatch=mismatch_report(profiles),
        )

    def materialized(self, shards: list[Path], pending: Pending | None) -> tuple[list[Path], None]:
        """The pending decision applied and written out, so a later pass can read the shards twice."""
        if pending is None:
            return shards, None
        return [self.write_shard(frame) for frame in self.shard_frames(shards, pending)], None


def shard_batches(frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """Shards as they come, skipping ones a decision emptied (ops need at least a row to say anything)."""
    return (frame for frame in frames if len(frame))

