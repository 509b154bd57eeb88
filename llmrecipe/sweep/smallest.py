"""`llmrecipe sweep RECIPE --smallest "steps.eval.val_loss <= 3.2"`: the smallest model on the sweep's ladder (its
grid's trials, ordered by parameters or training FLOPs) that meets the target, found without training every rung.

The two ends are trained first: if the largest misses the target no rung meets it, if the smallest meets it, it is
the answer. Then, while rungs between the largest that misses and the smallest that meets are untried, the scaling
law fitted to the trials so far (llmrecipe/sweep/scaling.py) names the smallest untried rung it predicts to meet
the target, and that rung is trained next; with too few points to fit, the middle rung is. The answer is confirmed
when the rung below it has been trained and misses. This assumes the metric improves with size along the ladder.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from llmrecipe.errors import RecipeError
from llmrecipe.sweep.prepare import PlannedTrial
from llmrecipe.sweep.scaling import bootstrap, fit
from llmrecipe.sweep.space import Trial

TARGET = re.compile(r"^\s*(steps\.[a-z][a-z0-9_-]*\.[A-Za-z0-9_]+)\s*(<=|<|>=|>)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")
COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True)
class Target:
    metric: str
    op: str
    threshold: float

    @property
    def goal(self) -> str:
        return "min" if self.op in ("<=", "<") else "max"

    def met(self, value: float | None) -> bool:
        return value is not None and COMPARE[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_target(text: str) -> Target:
    match = TARGET.match(text)
    if match is None:
        raise RecipeError(f"--smallest {text!r}: expected METRIC OP NUMBER, e.g. \"steps.eval.val_loss <= 3.2\" (OP is "
                          "<=, <, >= or >)")
    return Target(match[1], match[2], float(match[3]))


@dataclass(eq=False)
class Rung:
    trial: PlannedTrial
    size: float
    """Parameters or training FLOPs, as `--by` says."""
    n: float
    d: float
    measured: float | None = None
    tried: bool = False
    predicted_before: tuple[float, float, float] | None = None
    """The fit's prediction (value, low, high) when this rung was chosen, before it was trained."""


@dataclass
class SmallestSearch:
    """A proposer for the sweep driver: one trial at a time, chosen as above."""

    ladder: list[Rung]
    target: Target
    history: list[str] = field(default_factory=list)

    @classmethod
    def over(cls, planned: list[PlannedTrial], target: Target, by: str) -> "SmallestSearch":
        column = "params" if by == "params" else "train_flops"
        missing = [p.index for p in planned if not p.facts.get(column) or not p.facts.get("train_tokens")]
        if missing or len(planned) < 2:
            raise RecipeError(f"--smallest: needs a ladder of at least 2 trials whose plans know their {column} and "
                              f"training tokens (a pretrain step with a token or step budget); trials {missing} do not")
        rungs = [Rung(p, float(p.facts[column]), float(p.facts["params"]), float(p.facts["train_tokens"])) for p in planned]
        return cls(sorted(rungs, key=lambda r: (r.size, r.trial.index)), target)

    def batches(self) -> Iterator[list[Trial]]:
        ends = [rung for rung in dict.fromkeys((self.ladder[0], self.ladder[-1]))]  # both ends at once
        for rung in ends:
            rung.tried = True
        yield [rung.trial.trial for rung in ends]
        while (rung := self.next_rung()) is not None:
            rung.tried = True
            yield [rung.trial.trial]

    def tell(self, batch: list[Trial], results: dict[int, dict[str, Any]]) -> None:
        for rung in self.ladder:
            result = results.get(rung.trial.index)
            if result is not None:
                rung.measured = result.get("metrics", {}).get(self.target.metric) if result["state"] == "done" else None

    def bounds(self) -> tuple[int, int]:
        """(largest tried rung that misses, below the smallest that meets; smallest tried rung that meets), as
        positions on the ladder; -1 and len(ladder) when there is none."""
        meets = [i for i, r in enumerate(self.ladder) if r.tried and self.target.met(r.measured)]
        high = min(meets, default=len(self.ladder))
        misses = [i for i, r in enumerate(self.ladder[:high]) if r.tried and not self.target.met(r.measured)]
        return max(misses, default=-1), high

    def next_rung(self) -> Rung | None:
        low, high = self.bounds()
        if high == len(self.ladder) or high == 0:
            return None  # the largest misses (no rung meets the target), or the smallest meets it
        between = [i for i in range(low + 1, high) if not self.ladder[i].tried]
        if not between:
            return None
        predictions = self.predict()
        if predictions is None:
            choice = between[len(between) // 2]
            self.history.append(f"too few points to fit: trying the middle rung (trial {self.ladder[choice].trial.index})")
            return self.ladder[choice]
        meeting = [i for i in between if self.target.met(float(predictions[0][i]))]
        choice = meeting[0] if meeting else between[-1]
        rung = self.ladder[choice]
        rung.predicted_before = tuple(float(p[choice]) for p in predictions)
        self.history.append(f"the fit predicts {self.target.metric} = {rung.predicted_before[0]:.4g} "
                            f"[{rung.predicted_before[1]:.4g}, {rung.predicted_before[2]:.4g}] for trial "
                            f"{rung.trial.index} ({rung.n:,.0f} parameters): trying it")
        return rung

    def measured(self) -> list[Rung]:
        return [r for r in self.ladder if r.tried and r.measured is not None]

    def law(self):
        points = self.measured()
        return fit(*self._columns(points)) if points else None

    def predict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The fitted law's value at every rung, and its bootstrap interval; None when it cannot be fitted yet."""
        points = self.measured()
        law = self.law()
        if law is None:
            return None
        at_n = np.array([r.n for r in self.ladder])
        at_d = np.array([r.d for r in self.ladder])
        low, high = bootstrap(*self._columns(points), at_n, at_d)
        return law(at_n, at_d) * self._sign(), *sorted((low * self._sign(), high * self._sign()), key=lambda a: a[0])

    def _sign(self) -> float:
        """The law falls with size: a metric that should rise (accuracy) is fitted as its negative."""
        return 1.0 if self.target.goal == "min" else -1.0

    def _columns(self, points: list[Rung]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.array([r.n for r in points]), np.array([r.d for r in points]),
                np.array([r.measured for r in points]) * self._sign())

    def answer(self) -> Rung | None:
        low, high = self.bounds()
        return self.ladder[high] if high < len(self.ladder) else None

    def summary(self, by: str) -> dict[str, Any]:
        predictions = self.predict()
        law = self.law()
        answer = self.answer()
        rows = []
        for i, rung in enumerate(self.ladder):
            rows.append({"trial": rung.trial.index, "size": rung.size, "params": rung.n, "train_tokens": rung.d,
                         "tried": rung.tried, "measured": rung.measured,
                         "predicted": float(predictions[0][i]) if predictions else None,
                         "low": float(predictions[1][i]) if predictions else None,
                         "high": float(predictions[2][i]) if predictions else None,
                         "predicted_before": list(rung.predicted_before) if rung.predicted_before else None})
        law_text = law.describe() if law else None
        if law_text and self._sign() < 0:
            law_text = f"-({law_text})"
        return {"target": str(self.target), "metric": self.target.metric, "op": self.target.op,
                "threshold": self.target.threshold, "by": by, "rungs": len(self.ladder),
                "trials_run": sum(r.tried for r in self.ladder), "answer": answer.trial.index if answer else None,
                "law": law_text, "ladder": rows, "history": self.history}


def write_summary(folder, summary: dict[str, Any]) -> None:
    from llmrecipe.sweep.worker import write_atomically

    write_atomically(folder / "smallest.json", json.dumps(summary, indent=2))
