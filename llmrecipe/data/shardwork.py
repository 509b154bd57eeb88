"""One pass over one shard: the unit of work the pipeline hands to its worker processes (or Ray tasks).

A job reads its shard, applies the pending corpus decision's slice for the shard, runs the
document ops, then either writes the surviving documents as the next generation's shard (with what the next
corpus op needs to observe about them) or, in the last pass, cuts them into split parts. Every count, drop and
sample goes into a shard-local ledger part that the pipeline merges in shard order, so the result does not
depend on how many workers ran the jobs.

A job leaves its shard in place and saves its result next to its output, in a folder renamed into place last
(`result_path`): a job whose result folder exists is done, so a killed step re-runs only unfinished jobs, and a
job run twice (a retried Ray task) writes the same files again. The pipeline deletes a pass's shards once the
pass is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import json
import os
import shutil

import numpy as np
import polars as pl

from llmrecipe.data.ledger import Ledger, LedgerPart, Stage
from llmrecipe.data.mixing import kept
from llmrecipe.data.mismatch import ProfilePart, word_buckets
from llmrecipe.data.corpusjobs import Observing, shard_drops
from llmrecipe.data.ops import DOCUMENT_OPS
from llmrecipe.data.split import SPLITS, Bounds, positions, split_codes
from llmrecipe.data.words import WordHashes, lowercase_word_hashes
from llmrecipe.recipe.data import DataOp


@dataclass
class PendingSlice:
    """A corpus decision's verdicts for the rows of one shard."""

    label: str
    op: str
    reason: str
    shard: int
    """The shard's number in its pass (names its documents' positions)."""
    decided: Path | None = None
    """A dedup decision's folder, read for the shard's drops (corpusjobs.shard_drops)."""
    mix: tuple[int, list] | None = None
    """A mix's seed and per-source cutoffs (llmrecipe.data.mixing.kept)."""
    keep: np.ndarray | None = None
    """bool per row of the shard as read (rows an earlier slice of the same job drops are True): `loaded` sets it."""
    duplicate_of: pl.Series | None = None
    """For each dropped row (in row order) the id of the document kept in its place, when the decision says."""

    def loaded(self, frame: pl.DataFrame) -> "PendingSlice":
        """The slice with `keep` (and `duplicate_of`) for the shard's rows (`frame`, as read)."""
        if self.mix is not None:
            seed, cutoff = self.mix
            keep = kept(frame, seed, self.shard, cutoff)
            return PendingSlice(self.label, self.op, self.reason, self.shard, keep=keep)
        dropped, duplicate_of = shard_drops(self.decided, self.shard)
        keep = np.ones(len(frame), dtype=bool)
        keep[dropped] = False
        return PendingSlice(self.label, self.op, self.reason, self.shard, keep=keep, duplicate_of=duplicate_of)


@dataclass
class ShardJob:
    source: list[Path]
    """The shard's files (read blocks, or the previous pass's output), read as one frame."""
    target: Path
    """The next generation's shard, or in a split pass the stem of the split parts."""
    pending: list[PendingSlice]
    """Corpus decisions to apply, in order."""
    ops: list[tuple[int, DataOp]]
    """Document ops with their index in the recipe's `ops`."""
    number: int = 0
    """The job's place in its pass (the number of the shard it writes)."""
    observe: list[Observing] = field(default_factory=list)
    """The corpus ops that observe the surviving documents."""
    split_bounds: dict[int, Bounds] | None = None
    """Set in the last pass: write split parts instead of a shard."""
    save_words: bool = False
    """Keep the surviving documents' lower-cased word buckets next to the written shard (`words_path`)."""
    reuse_words: bool = False
    """The source shard has its word buckets saved and its texts reach the split parts unchanged: the split
    profiles count them instead of splitting the texts into words again."""

    def run(self) -> ShardResult:
        return run_shard(self)


@dataclass
class ShardResult:
    rows: int
    """Documents that survived the pass (0: nothing was written)."""
    ledger: LedgerPart
    parts: dict[str, Path] = field(default_factory=dict)
    profiles: dict[str, ProfilePart] = field(default_factory=dict)


def run_shard(job: ShardJob) -> ShardResult:
    """The job run, its result saved (see `result_path`) and returned."""
    result = shard_result(job)
    save_result(result, result_path(job.target))
    return result


def shard_result(job: ShardJob) -> ShardResult:
    frame = pl.read_parquet(job.source)
    words = load_words(job.source[0]) if job.reuse_words and not job.ops else None
    ledger = Ledger(None)
    as_read = frame
    alive = np.arange(len(frame))  # the rows of the shard as read that are still in `frame`
    for piece in job.pending:
        frame, alive = apply_pending(frame, piece.loaded(as_read), alive, ledger)
    if len(frame):  # ops need at least a row to say anything
        frame = apply_document_ops(frame, job.ops, ledger)
    result = ShardResult(len(frame), ledger.part())
    if job.split_bounds is not None:
        write_split_parts(frame, job, result, words, alive)
    elif len(frame):
        text = frame["text"]
        lowered = lowercase_word_hashes(text) if job.save_words else None  # split once, used twice
        for observing in job.observe:
            observing.observe(job.number, text, lowered)
        frame.write_parquet(job.target, compression="uncompressed")  # read back once, soon: speed over size
        if lowered is not None:
            save_words(job.target, lowered, len(frame))
    return result


def result_path(target: Path) -> Path:
    """Where the result of the job writing `target` is kept; its existence means the job is done."""
    return target.with_name(f"{target.name}.result")


def save_result(result: ShardResult, folder: Path) -> None:
    """The result in plain files (JSON, npz, Parquet: nothing pickled), in a folder renamed into place last."""
    staging = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    arrays = {}
    for name, profile in result.profiles.items():
        arrays.update({f"profile-{name}-{field}": getattr(profile, field) for field in ("lengths", "buckets", "counts")})
    np.savez(staging / "arrays.npz", **arrays)
    ledger = result.ledger
    if ledger.dropped:
        pl.concat(ledger.dropped).write_parquet(staging / "dropped.parquet")
    meta = {"rows": result.rows,
            "parts": {name: path.name for name, path in result.parts.items()},
            "profiles": {name: [profile.docs, profile.chars] for name, profile in result.profiles.items()},
            "stages": [stage.as_dict() for stage in ledger.stages], "samples": ledger.samples}
    (staging / "result.json").write_text(json.dumps(meta))
    try:
        staging.rename(folder)
    except OSError:  # another run of the same job (a retried task) finished first: its result is the same
        shutil.rmtree(staging, ignore_errors=True)


def load_result(folder: Path) -> ShardResult:
    meta = json.loads((folder / "result.json").read_text())
    with np.load(folder / "arrays.npz") as saved:
        arrays = {key: saved[key] for key in saved.files}
    dropped = [pl.read_parquet(folder / "dropped.parquet")] if (folder / "dropped.parquet").exists() else []
    ledger = LedgerPart([Stage.from_dict(stage) for stage in meta["stages"]], dropped, meta["samples"])
    profiles = {name: ProfilePart(docs, chars, *(arrays[f"profile-{name}-{field}"] for field in ("lengths", "buckets", "counts")))
                for name, (docs, chars) in meta["profiles"].items()}
    parts = {name: folder.parent / file for name, file in meta["parts"].items()}
    return ShardResult(meta["rows"], ledger, parts, profiles)


def words_path(shard: Path) -> Path:
    return shard.with_suffix(".words.npz")


def save_words(shard: Path, lowered: WordHashes, n_docs: int) -> None:
    """Per document its word count, and per word its split-profile bucket, next to the shard."""
    doc, hashes = lowered
    np.savez(words_path(shard), counts=np.bincount(doc, minlength=n_docs), buckets=word_buckets(hashes).astype(np.uint32))


def load_words(shard: Path) -> tuple[np.ndarray, np.ndarray]:
    """`save_words`' word counts and buckets of the shard as written."""
    with np.load(words_path(shard)) as saved:
        return saved["counts"], saved["buckets"]


def words_of_rows(words: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The saved buckets of the words of the given rows (of the shard as written), in row order."""
    counts, buckets = words
    starts = np.cumsum(counts) - counts
    lengths = counts[rows]
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum())) - np.repeat(offsets - starts[rows], lengths)
    return buckets[positions].astype(np.int64)


def apply_pending(frame: pl.DataFrame, pending: PendingSlice, alive: np.ndarray,
                  ledger: Ledger) -> tuple[pl.DataFrame, np.ndarray]:
    """`frame` (the shard's rows `alive`) with the rows the decision drops removed, and the rows left."""
    kept_rows = pending.keep[alive]
    keep = pl.Series(kept_rows)
    dropped = frame.filter(~keep).with_columns(reason=pl.lit(pending.reason))
    if pending.duplicate_of is not None and len(dropped):
        dropped = dropped.with_columns(duplicate_of=pending.duplicate_of)
    kept = frame.filter(keep)
    ledger.passed(ledger.stage(pending.label, pending.op), frame, kept, dropped)
    return kept, alive[kept_rows]


def apply_document_ops(frame: pl.DataFrame, ops: list[tuple[int, DataOp]], ledger: Ledger) -> pl.DataFrame:
    for index, op in ops:
        stage = ledger.stage(stage_label(index, op), op.op)
        result = DOCUMENT_OPS[op.op](frame, op)
        stage.counters.update({k: v for k, v in result.counters.items() if v})
        if result.drop is None:
            ledger.passed(stage, frame, result.frame, result.frame.clear())
            frame = result.frame
            continue
        dropped_rows = result.drop.is_not_null()
        kept = result.frame.filter(~dropped_rows)
        dropped = result.frame.filter(dropped_rows).with_columns(reason=result.drop.filter(dropped_rows))
        ledger.passed(stage, frame, kept, dropped)
        frame = kept
    return frame


def stage_label(index: int, op: DataOp) -> str:
    return f"ops[{index}] {op.op}"


def write_split_parts(frame: pl.DataFrame, job: ShardJob, result: ShardResult,
                      words: tuple[np.ndarray, np.ndarray] | None, alive: np.ndarray) -> None:
    """`frame` (the source shard's rows `alive`) cut into split parts, with their profiles (from the saved
    `words` of the shard when given)."""
    if not len(frame):
        return
    codes = split_codes(positions(frame["text"]), frame["source"].to_numpy(), job.split_bounds)
    for code, name in enumerate(SPLITS):
        chosen = codes == code
        part = frame.filter(pl.Series(chosen))
        if len(part):
            path = job.target.with_name(f"{job.target.stem}-{name}.parquet")
            part.write_parquet(path, compression="uncompressed")
            result.parts[name] = path
            buckets = words_of_rows(words, alive[chosen]) if words is not None else None
            result.profiles[name] = ProfilePart.of(part["text"], buckets)
