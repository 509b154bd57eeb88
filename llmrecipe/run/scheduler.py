"""Run a plan: skip what the store already has, run the rest in order, commit each step atomically."""

from __future__ import annotations

import datetime as dt
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from llmrecipe.errors import StepError, StepFailed
from llmrecipe.plan.plan import Plan, PlanStep
from llmrecipe.run.context import Reporter, StepContext
from llmrecipe.run.record import RunRecord
from llmrecipe.run.store import Store

Executor = Callable[[dict[str, Any], StepContext], dict[str, Any]]
"""An executor takes its resolved spec and context, writes into ctx.out_dir and returns summary metrics."""


@dataclass
class StepOutcome:
    name: str
    kind: str
    state: str  # "cached" | "done" | "failed" | "skipped"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: str
    record_dir: Path
    outcomes: list[StepOutcome]


class Scheduler:
    def __init__(self, store: Store, executors: Mapping[str, Executor], reporter: Reporter):
        self.store = store
        self.executors = executors
        self.reporter = reporter
        self.outcomes: list[StepOutcome] = []
        """Steps of the latest run so far: complete after a failure too, for the report."""

    def run(self, plan: Plan, record: RunRecord, *, only: set[str] | None = None, force: set[str] = frozenset()) -> RunReport:
        """Run the plan (or `only` these steps and what they need). `force` re-runs steps even if stored."""
        self.store.clear_staging()
        wanted = plan.upstream_of(only) if only else {s.name for s in plan.steps}
        self.outcomes = []
        for step in plan.steps:
            if step.name not in wanted:
                self.outcomes.append(StepOutcome(step.name, step.kind, "skipped"))
                continue
            if step.name in force:
                self.store.forget(step.fingerprint)
            self.outcomes.append(self._run_step(plan, step, record))
        return RunReport(run_id=record.run_id, record_dir=record.dir, outcomes=self.outcomes)

    def _run_step(self, plan: Plan, step: PlanStep, record: RunRecord) -> StepOutcome:
        if self.store.is_done(step.fingerprint):
            self.reporter.step_cached(step.name, step.kind)
            record.event({"event": "step_cached", "step": step.name, "fingerprint": step.fingerprint})
            metrics = (self.store.manifest(step.fingerprint) or {}).get("metrics", {})
            self.store.remember(plan.name, step.name, step.fingerprint)
            return StepOutcome(step.name, step.kind, "cached", metrics=metrics)

        scratch = self.store.scratch(step.fingerprint)
        resumed = any(scratch.iterdir())
        staging = self.store.new_staging(step.fingerprint)
        ctx = StepContext(
            name=step.name,
            inputs={role: self.store.path(plan.step(upstream).fingerprint) for role, upstream in step.inputs.items()},
            out_dir=staging,
            scratch_dir=scratch,
            device=plan.device,
            reporter=self.reporter,
            external=step.external,
            event=record.step_events(step.name),
            downloads_dir=self.store.workdir / "downloads",
        )
        self.reporter.step_started(step.name, step.kind, resumed)
        record.event({"event": "step_started", "step": step.name, "fingerprint": step.fingerprint, "resumed": resumed})
        started = dt.datetime.now(dt.timezone.utc)
        clock = time.perf_counter()
        try:
            metrics = self.executors[step.kind](step.spec, ctx)
        except StepError as error:
            self.outcomes.append(StepOutcome(step.name, step.kind, "failed"))
            self._fail(step, record, str(error))
            raise StepFailed(step.name, str(error)) from None
        except Exception as error:  # a bug, not a user mistake: keep the traceback in the run record
            (record.dir / f"{step.name}.traceback.txt").write_text(traceback.format_exc())
            message = f"unexpected {type(error).__name__}: {error}"
            self.outcomes.append(StepOutcome(step.name, step.kind, "failed"))
            self._fail(step, record, message)
            raise StepFailed(step.name, message, details=str(record.dir / f"{step.name}.traceback.txt")) from error
        seconds = time.perf_counter() - clock
        self.store.commit(
            step.fingerprint,
            staging,
            {
                "step": step.name,
                "kind": step.kind,
                "fingerprint": step.fingerprint,
                "executor_version": step.executor_version,
                "spec": step.spec,
                "inputs": {role: plan.step(up).fingerprint for role, up in step.inputs.items()},
                "external": [f.model_dump(exclude={"path"}) for f in step.external],
                "started": started.isoformat(timespec="seconds"),
                "seconds": round(seconds, 3),
                "run_id": record.run_id,
                "metrics": metrics,
            },
        )
        self.store.remember(plan.name, step.name, step.fingerprint)
        self.reporter.step_done(step.name, step.kind, seconds, metrics)
        record.event({"event": "step_done", "step": step.name, "seconds": round(seconds, 3), "metrics": metrics})
        return StepOutcome(step.name, step.kind, "done", seconds, metrics)

    def _fail(self, step: PlanStep, record: RunRecord, message: str) -> None:
        self.reporter.step_failed(step.name, step.kind, message)
        record.event({"event": "step_failed", "step": step.name, "message": message})
