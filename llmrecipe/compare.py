"""A/B comparison of two evaluations: per suite and metric, A - B with a paired bootstrap interval and a verdict.

A side is a run record (`<workdir>/runs/<run-id>/`, or just the run id), or an `evaluate` step's artifact
folder. Suites are paired by name; their examples by position, so both sides must have evaluated the
same examples (the same data file, or the same data step's split).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from llmrecipe.errors import RecipeError
from llmrecipe.evals.registry import suite_metrics
from llmrecipe.evals.stats import paired_comparison

SEED = 0
"""Bootstrap seed: the same two runs always give the same intervals."""


def evaluation_folder(target: str, workdir: Path, step: str | None) -> Path:
    """The artifact folder of the evaluate step a run record (or run id, or artifact folder) points at."""
    path = Path(target)
    if not path.exists() and (workdir / "runs" / target).is_dir():
        path = workdir / "runs" / target
    if (path / "results.json").is_file():
        return path
    plan_file = path / "plan.json"
    if not plan_file.is_file():
        raise RecipeError(
            f"compare {target}: neither a run record (a folder with plan.json) nor an evaluate artifact "
            f"(a folder with results.json), nor a run id under {workdir / 'runs'}"
        )
    plan = json.loads(plan_file.read_text())
    steps = [s for s in plan["steps"] if s["kind"] == "evaluate" and (step is None or s["name"] == step)]
    if len(steps) != 1:
        names = [s["name"] for s in plan["steps"] if s["kind"] == "evaluate"]
        wanted = f"no evaluate step named '{step}'" if step else f"{len(steps)} evaluate steps"
        raise RecipeError(f"compare {target}: {wanted} in that run (evaluate steps: {names}); pick one with --step")
    folder = Path(plan["workdir"]) / "store" / steps[0]["fingerprint"]
    if not (folder / "results.json").is_file():
        raise RecipeError(f"compare {target}: step '{steps[0]['name']}' has no results in {folder}; run it first")
    return folder


def compare_folders(a: Path, b: Path, resamples: int = 1000) -> list[dict[str, Any]]:
    """One row per (suite, metric) both sides measured on the same examples; unpaired suites get a reason."""
    results_a = json.loads((a / "results.json").read_text())["suites"]
    results_b = json.loads((b / "results.json").read_text())["suites"]
    rows = []
    for suite, summary in results_a.items():
        other = results_b.get(suite)
        if other is None or other["type"] != summary["type"]:
            continue
        if summary.get("data_sha256") != other.get("data_sha256"):
            rows.append({"suite": suite, "metric": "*", "verdict": "not paired: the two sides read different data files"})
            continue
        columns_a, columns_b = read_columns(a / "examples" / f"{suite}.jsonl"), read_columns(b / "examples" / f"{suite}.jsonl")
        examples = len(next(iter(columns_a.values()))) if columns_a else 0
        if not examples or examples != (len(next(iter(columns_b.values()))) if columns_b else 0):
            if summary["metrics"] or other["metrics"]:
                rows.append({"suite": suite, "metric": "*", "verdict": f"not paired: {summary['examples']} vs "
                             f"{other['examples']} examples (evaluate both on the same data)"})
            continue
        for name, metric in suite_metrics(summary["type"]).items():
            if not metric.compared:
                continue
            result = paired_comparison(metric, columns_a, columns_b, resamples, SEED)
            rows.append(
                {"suite": suite, "metric": name, "a": result.a, "b": result.b, "difference": result.difference,
                 "low": result.low, "high": result.high, "verdict": result.verdict, "examples": examples,
                 "higher_is_better": metric.higher_is_better}
            )
    return rows


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """examples/<suite>.jsonl -> the per-example score columns."""
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    names = list(rows[0]["scores"]) if rows else []
    return {n: np.array([row["scores"][n] for row in rows], dtype=np.float64) for n in names}
