"""One pass over one shard: the unit of work the pipeline hands to its worker processes.

A job reads its shard (and deletes it), applies the pending corpus decision's slice for the shard, runs the
document ops, then either writes the surviving documents as the next generation's shard (with what the next
corpus op needs to observe about them) or, in the last pass, cuts them into split parts. Every count, drop and
sample goes into a shard-local ledger part that the pipeline merges in shard order, so the result does not
depend on how many workers ran the jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from llmrecipe.data.ledger import Ledger, LedgerPart
from llmrecipe.data.mismatch import ProfilePart
from llmrecipe.data.ops import CORPUS_OPS, DOCUMENT_OPS
from llmrecipe.data.split import SPLITS, Bounds, positions, split_codes
from llmrecipe.recipe.data import DataOp


@dataclass
class PendingSlice:
    """A corpus decision's verdicts for the rows of one shard."""

    label: str
    op: str
    reason: str
    keep: np.ndarray
    """bool per row of the shard."""
    duplicate_of: pl.Series | None = None
    """For each dropped row (in row order) the id of the document kept in its place, when the decision says."""


@dataclass
class ShardJob:
    source: Path
    target: Path
    """The next generation's shard, or in a split pass the stem of the split parts."""
    pending: PendingSlice | None
    ops: list[tuple[int, DataOp]]
    """Document ops with their index in the recipe's `ops`."""
    observe: DataOp | None = None
    """The corpus op whose observation of the surviving documents is wanted."""
    split_bounds: dict[int, Bounds] | None = None
    """Set in the last pass: write split parts instead of a shard."""


@dataclass
class ShardResult:
    rows: int
    """Documents that survived the pass (0: nothing was written)."""
    ledger: LedgerPart
    observation: Any = None
    parts: dict[str, Path] = field(default_factory=dict)
    profiles: dict[str, ProfilePart] = field(default_factory=dict)


def run_shard(job: ShardJob) -> ShardResult:
    frame = pl.read_parquet(job.source)
    job.source.unlink()
    ledger = Ledger(None)
    if job.pending is not None:
        frame = apply_pending(frame, job.pending, ledger)
    if len(frame):  # ops need at least a row to say anything
        frame = apply_document_ops(frame, job.ops, ledger)
    result = ShardResult(len(frame), ledger.part())
    if job.split_bounds is not None:
        write_split_parts(frame, job, result)
    elif len(frame):
        if job.observe is not None:
            result.observation = CORPUS_OPS[job.observe.op].observation(job.observe, frame["text"])
        frame.write_parquet(job.target, compression="uncompressed")  # read back once, soon: speed over size
    return result


def apply_pending(frame: pl.DataFrame, pending: PendingSlice, ledger: Ledger) -> pl.DataFrame:
    keep = pl.Series(pending.keep)
    dropped = frame.filter(~keep).with_columns(reason=pl.lit(pending.reason))
    if pending.duplicate_of is not None and len(dropped):
        dropped = dropped.with_columns(duplicate_of=pending.duplicate_of)
    kept = frame.filter(keep)
    ledger.passed(ledger.stage(pending.label, pending.op), frame, kept, dropped)
    return kept


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


def write_split_parts(frame: pl.DataFrame, job: ShardJob, result: ShardResult) -> None:
    if not len(frame):
        return
    codes = split_codes(positions(frame["text"]), frame["source"].to_numpy(), job.split_bounds)
    for code, name in enumerate(SPLITS):
        part = frame.filter(pl.Series(codes == code))
        if len(part):
            path = job.target.with_name(f"{job.target.stem}-{name}.parquet")
            part.write_parquet(path, compression="uncompressed")
            result.parts[name] = path
            result.profiles[name] = ProfilePart.of(part["text"])
