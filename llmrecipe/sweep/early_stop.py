"""`[sweep] early_stop`: Optuna's pruners judge running trials by the validation losses their training writes (the
`metrics.jsonl` in the training step's scratch folder), and a trial judged behind is stopped the ordinary way (a
SIGTERM: it saves a checkpoint and ends) and recorded as pruned."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

MEDIAN_STARTUP_TRIALS = 2
"""Finished trials the median pruner waits for before it compares: one curve is no median."""


class EarlyStop:
    """Reports each watched trial's new validation losses to its Optuna trial and asks whether to prune it.

    `study` is the TPE sweep's own (its trials are asked there, and the TPE proposer tells their ends); grid and
    random sweeps get a study of their own, asked and told here."""

    def __init__(self, kind: str, goal: str, study: Any | None = None):
        import optuna

        self.optuna = optuna
        self.sign = 1.0 if goal == "min" else -1.0  # a loss falls as a trial improves; a "max" study wants it rising
        self.owns_study = study is None
        self.study = study or optuna.create_study(direction="minimize" if goal == "min" else "maximize",
                                                  pruner=make_pruner(kind))
        self.trials: dict[int, Any] = {}
        self.reported: dict[int, int] = {}
        self.lock = threading.Lock()

    def start(self, index: int, asked: Any | None = None) -> None:
        with self.lock:
            self.trials[index] = asked if asked is not None else self.study.ask()
            self.reported[index] = -1

    def should_stop(self, index: int, metrics: Path) -> str | None:
        """Why trial `index` should stop now, or None: its validation losses so far, reported, judged."""
        records = _validations(metrics)
        with self.lock:
            trial = self.trials[index]
            for step, loss in records:
                if step > self.reported[index]:
                    trial.report(self.sign * loss, step)
                    self.reported[index] = step
            if self.reported[index] >= 0 and trial.should_prune():
                last = max(records)
                return f"pruned at step {last[0]}: validation loss {last[1]:.4g} is behind the other trials'"
        return None

    def finish(self, index: int, result: dict[str, Any], value: float | None) -> None:
        """Tell the trial's end to a study of our own (a TPE study's proposer tells its own)."""
        if not self.owns_study:
            return
        with self.lock:
            trial = self.trials.pop(index)
            if result["state"] == "pruned":
                self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
            elif result["state"] == "done" and value is not None:
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)


def make_pruner(kind: str):
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _validations(path: Path) -> list[tuple[int, float]]:
    """(step, val_loss) of the training's validations so far; a line being written is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val_loss" in record:
            found.append((int(record["step"]), float(record["val_loss"])))
    return found
