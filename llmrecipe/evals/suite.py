"""What every evaluation suite receives and returns; the registry (registry.py) maps a type to its runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrecipe.evals.stats import Metric
from llmrecipe.run.context import StepContext


@dataclass
class SuiteEnv:
    """The model and everything around it that a suite may use."""

    name: str
    """The suite's name in the recipe."""
    model: torch.nn.Module
    tokenizer: Any
    """The model's tokenizer (`tokenizers.Tokenizer`)."""
    eot_id: int
    vocab_size: int
    """The tokenizer's vocabulary; the model's padded rows past it are never generated."""
    tokens_dir: Path | None
    """The tokenized splits of the model's data step (None for an imported model: the plan admits no suite that
    reads them)."""
    data_path: Path | None
    """The suite's own file (JSONL or text), if it reads one."""
    batch_size: int
    device: str
    seed: int
    worst: int
    """How many worst examples to return."""
    bootstrap: int
    """Bootstrap resamples behind an interval the suite computes itself (per category, say)."""
    out_dir: Path
    """The step's output folder, for plots."""
    ctx: StepContext


@dataclass
class SuiteResult:
    columns: dict[str, np.ndarray]
    """Per-example values whose sums give every metric in the suite's METRICS (for intervals and compare)."""
    examples: list[dict[str, Any]]
    """Per-example details, in example order (written to examples/<suite>.jsonl with the columns)."""
    worst: list[dict[str, Any]]
    """Error analysis: the worst examples, worst first."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further numbers that have no interval (token counts, a baseline, chance level)."""
    plots: list[str] = field(default_factory=list)
    """PNG files written into out_dir."""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Further tables for the report, by title (per-class scores, rows to review); each row a dict of cells."""
    note: str | None = None
    """Why the suite measured nothing, when it did not."""


def progress_bar(env: SuiteEnv, total: int, unit: str):
    return env.ctx.progress(total=total, unit=unit)


def mean(column: str, over: str = "count", higher_is_better: bool = True) -> Metric:
    """The mean of a per-example score: the column's sum over the examples counted by `over` (all of them, or a
    0/1 column such as the ambiguous questions); undefined (NaN) when there are none."""
    return Metric(lambda sums: sums[column] / sums[over] if sums[over] else float("nan"),
                  higher_is_better=higher_is_better)


def proportion(column: str) -> Metric:
    """A share of examples: the mean of a 0/1 column."""
    return mean(column)
