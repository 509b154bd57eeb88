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

    def as_dict(self) -> dict:
        return {
            "stage": self.label, "op": self.op, "docs_in": self.docs_in, "docs_out": self.docs_out,
            "chars_in": self.chars_in, "chars_out": self.chars_out, "dropped": dict(sorted(self.dropped.items())),
            "dropped_chars": dict(sorted(self.dropped_chars.items())), "counters": dict(sorted(self.counters.items())),
        }


class Ledger:
    def __init__(self, work: Path):
        self.work = work
        self.stages: list[Stage] = []
        self.samples: list[dict] = []
        self._sampled: Counter = Counter()
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self.dropped_parts: list[Path] = []

    def stage(self, label: str, op: str) -> Stage:
        stage = Stage(label, op)
        self.stages.append(stage)
        return stage

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
        rows = dropped.select(id="id", stage=pl.lit(stage.label), reason="reason", duplicate_of="duplicate_of")
        self._pending.append(rows)
        self._pending_rows += len(rows)
        if self._pending_rows >= FLUSH_ROWS:
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
        if self._pending:
            path = self.work / f"dropped-{len(self.dropped_parts)}.parquet"
            pl.concat(self._pending).write_parquet(path)
            self.dropped_parts.append(path)
        self._pending, self._pending_rows = [], 0

    def write_dropped(self, path: Path) -> None:
        """Every dropped document's id, stage, reason (and the id kept in its place for duplicates)."""
        self._flush()
        if self.dropped_parts:
            pl.scan_parquet(self.dropped_parts).sink_parquet(path)
        else:
            pl.DataFrame(schema=DROPPED_SCHEMA).write_parquet(path)


def chars(frame: pl.DataFrame) -> int:
    return int(frame["text"].str.len_chars().sum() or 0)
