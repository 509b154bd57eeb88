"""A sweep's folder, `<workdir>/runs/<sweep-id>/`: `trials/<n>.json` (one result per finished trial, written by its
worker), `trials.parquet` (every trial: values, final metrics, parameters, FLOPs, wall time, fingerprints),
`sweep.json` (what was swept, on what, from which commit) and the report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from llmrecipe.run.provenance import environment, git_state
from llmrecipe.sweep.prepare import PlannedTrial, SweepSetup
from llmrecipe.sweep.worker import write_atomically

SET, METRIC, FINGERPRINT = "set:", "metric:", "fingerprint:"
"""Column prefixes of trials.parquet: a value the trial set, a final metric a step reported, a step's fingerprint."""


def result_path(setup: SweepSetup, index: int) -> Path:
    return setup.folder / "trials" / f"{index}.json"


def read_result(setup: SweepSetup, index: int) -> dict[str, Any] | None:
    path = result_path(setup, index)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def trial_row(setup: SweepSetup, planned: PlannedTrial, result: dict[str, Any]) -> dict[str, Any]:
    """One row of trials.parquet: the trial's values, its plan's facts, and how it ended."""
    metrics = result.get("metrics", {})
    row: dict[str, Any] = {
        "trial": planned.index, "name": planned.name, "state": result["state"], "error": result.get("error"),
        "objective": metrics.get(setup.metric), "params": planned.facts["params"],
        "train_flops": planned.facts["train_flops"], "train_tokens": planned.facts["train_tokens"],
        "seconds": result.get("seconds"), "run_id": result.get("run_id"),
    }
    row.update({SET + key: value for key, value in planned.trial.values.items()})
    row.update({METRIC + key: float(value) for key, value in sorted(metrics.items())})
    row.update({FINGERPRINT + step: fp for step, fp in planned.facts["fingerprints"].items()})
    return row


def write_trials(setup: SweepSetup, rows: list[dict[str, Any]]) -> Path:
    """trials.parquet, one row per trial in trial order (a failed trial's metrics are null)."""
    import polars as pl

    path = setup.folder / "trials.parquet"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    frame = pl.DataFrame([{key: row.get(key) for key in columns} for row in sorted(rows, key=lambda r: r["trial"])],
                         strict=False, infer_schema_length=None)
    partial = path.with_name(path.name + ".partial")
    frame.write_parquet(partial)
    partial.replace(path)
    return path


def write_sweep_json(setup: SweepSetup, outcome: str, counts: dict[str, int], device: str) -> None:
    """sweep.json: the sweep's settings, the machine and package versions, the recipe's commit, and how it went."""
    data = {
        "sweep_id": setup.sweep_id, "outcome": outcome, "written": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"), "recipe_file": str(setup.loaded.path), "overrides": setup.overrides,
        "workdir": str(setup.workdir), "metric": setup.metric, "metric_step": setup.metric_step,
        "model_step": setup.model_step,
        "goal": setup.goal, "method": setup.sweep.method, "seed": setup.seed,
        "sweep": setup.sweep.model_dump(mode="json", by_alias=True), "trials": counts,
        "environment": environment(device), "git": git_state(setup.loaded.path),
    }
    write_atomically(setup.folder / "sweep.json", json.dumps(data, indent=2))
