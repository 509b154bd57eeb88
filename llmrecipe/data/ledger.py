"""Accounting: for every stage (mixing, each op) documents and characters in and out, drops by reason, a
sample of dropped documents per reason, and the id of every dropped document with its reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

SAMPLES_PER_REASON = 5
SAMPLE_CHARS = 500
DROPPED_SCHEMA = {"id": pl.String, "stage": pl.String, "reason": pl.String, "duplicate_of": pl.String}
FLUSH_ROWS = 100_000


@dataclass
class Stage:
    label: str
    """How the report names it: `mix` or `ops[2] quality`."""
    op: str
    docs_in: int = 0
    chars_in: int = 0
    docs_out: int = 0
    chars_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_chars: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)

    @classmethod
    def from_dict(cls, saved: dict) -> "Stage":
        """The stage `as_dict` described."""
        counts = {key: Counter(saved[key]) for key in ("dropped", "dropped_chars", "counters")}
        return cls(saved["stage"], saved["op"], saved["docs_in"], saved["chars_in"], saved["docs_out"], saved["chars_out"],
                   **counts)

    def as_dict(self) -> dict:
        return {
            "stage": self.label, "op": self.op, "docs_in": self.docs_in, "docs_out": self.docs_out,
            "chars_in": self.chars_in, "chars_out": self.chars_out, "dropped": dict(sorted(self.dropped.items())),
            "dropped_chars": dict(sorted(self.dropped_chars.items())), "counters": dict(sorted(self.counters.items())),
        }


@dataclass
class LedgerPart:
    """What one shard's pass added to a ledger (kept by a worker process and merged into the step's ledger):
    its stages' counts, its dropped rows and up to SAMPLES_PER_REASON samples per stage and reason."""

    stages: list[Stage]
    dropped: list[pl.DataFrame]
    samples: list[dict]


class Ledger:
    def __init__(self, work: Path | None):
        """`work`: where dropped rows are flushed in parts; None keeps them in memory (one shard's worth)."""
        self.work = work
        self.stages: list[Stage] = []
        self.samples: list[dict] = []
        self._sampled: Counter = Counter()
        self._pending: dict[str, list[pl.DataFrame]] = {}
        """Dropped rows not yet flushed, by stage label."""
        self._pending_rows = 0
        self.dropped_parts: dict[str, list[Path]] = {}
        """Flushed dropped rows, by stage label, in flush order."""

    def stage(self, label: str, op: str) -> Stage:
        stage = Stage(label, op)
        self.stages.append(stage)
        return stage

    def part(self) -> LedgerPart:
        return LedgerPart(self.stages, [rows for parts in self._pending.values() for rows in parts], self.samples)

    def merge(self, part: LedgerPart) -> None:
        """Add a shard's ledger part to the stages of the same labels. Parts merged in shard order give the
        same counts, samples and dropped rows as one ledger that saw the shards itself."""
        by_label = {stage.label: stage for stage in self.stages}
        for local in part.stages:
            stage = by_label[local.label]
            stage.docs_in += local.docs_in
            stage.chars_in += local.chars_in
            stage.docs_out += local.docs_out
            stage.chars_out += local.chars_out
            stage.dropped.update(local.dropped)
            stage.dropped_chars.update(local.dropped_chars)
            stage.counters.update(local.counters)
        for sample in part.samples:
            key = (sample["stage"], sample["reason"])
            if self._sampled[key] < SAMPLES_PER_REASON:
                self._sampled[key] += 1
                self.samples.append(sample)
        for rows in part.dropped:
            self._keep_rows(rows)

    def passed(self, stage: Stage, frame: pl.DataFrame, kept: pl.DataFrame, dropped: pl.DataFrame) -> None:
        """One batch went through `stage`: `frame` came in, `kept` went on, `dropped` (with `reason` and
        optionally `duplicate_of`) stayed behind."""
        stage.docs_in += len(frame)
        stage.chars_in += chars(frame)
        stage.docs_out += len(kept)
        stage.chars_out += chars(kept)
        if len(dropped):
            self.dropped(stage, dropped)

    def dropped(self, stage: Stage, dropped: pl.DataFrame) -> None:
        by_reason = dropped.group_by("reason").agg(docs=pl.len(), chars=pl.col("text").str.len_chars().sum())
        for reason, docs, n_chars in by_reason.iter_rows():
            stage.dropped[reason] += docs
            stage.dropped_chars[reason] += int(n_chars or 0)
        self._sample(stage, dropped)
        if "duplicate_of" not in dropped.columns:
            dropped = dropped.with_columns(duplicate_of=pl.lit(None, dtype=pl.String))
        self._keep_rows(dropped.select(id="id", stage=pl.lit(stage.label), reason="reason", duplicate_of="duplicate_of"))

    def _keep_rows(self, rows: pl.DataFrame) -> None:
        # Kept apart by stage: within a stage rows arrive in corpus order whatever the shard boundaries, while
        # the interleaving of stages follows the shards (and so the batch size, which is not fingerprinted).
        for (label,), part in rows.partition_by("stage", maintain_order=True, as_dict=True).items():
            self._pending.setdefault(label, []).append(part)
        self._pending_rows += len(rows)
        if self.work is not None and self._pending_rows >= FLUSH_ROWS:
            self._flush()

    def _sample(self, stage: Stage, dropped: pl.DataFrame) -> None:
        for reason in dropped["reason"].unique(maintain_order=True).to_list():
            key = (stage.label, reason)
            room = SAMPLES_PER_REASON - self._sampled[key]
            if room <= 0:
                continue
            rows = dropped.filter(pl.col("reason") == reason).head(room)
            self._sampled[key] += len(rows)
            for row in rows.iter_rows(named=True):
                self.samples.append({"stage": stage.label, "reason": reason, "id": row["id"],
                                     "duplicate_of": row.get("duplicate_of"), "text": row["text"][:SAMPLE_CHARS]})

    def _flush(self) -> None:
        for label, parts in self._pending.items():
            flushed = self.dropped_parts.setdefault(label, [])
            path = self.work / f"dropped-{sum(map(len, self.dropped_parts.values()))}.parquet"
            pl.concat(parts).write_parquet(path)
            flushed.append(path)
        self._pending, self._pending_rows = {}, 0

    def write_dropped(self, path: Path) -> None:
        """Every dropped document's id, stage, reason (and the id kept in its place for duplicates): stage by stage
        in pipeline order, each stage's rows in corpus order."""
        self._flush()
        parts = [part for stage in self.stages for part in self.dropped_parts.get(stage.label, [])]
        if parts:
            # small row groups: the writer holds one in memory, and the default size would hold them all
            pl.scan_parquet(parts, low_memory=True).sink_parquet(path, row_group_size=FLUSH_ROWS)
        else:
            pl.DataFrame(schema=DROPPED_SCHEMA).write_parquet(path)


def chars(frame: pl.DataFrame) -> int:
    return int(frame["text"].str.len_chars().sum() or 0)
