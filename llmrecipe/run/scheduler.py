"""Run a plan: skip what the store already has (after checking it), run the rest in order, commit each step
atomically, and stop cleanly at a step boundary when asked to (SIGTERM, SIGINT, max_time)."""

from __future__ import annotations

import datetime as dt
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from llmrecipe import preemption
from llmrecipe.errors import StepError, StepFailed, StorageError
from llmrecipe.plan.plan import Plan, PlanStep
from llmrecipe.run.context import Reporter, StepContext
from llmrecipe.run.record import RunRecord
from llmrecipe.run.space import describe, storage_problem, what_failed
from llmrecipe.run.store import Store

Executor = Callable[[dict[str, Any], StepContext], dict[str, Any]]
"""An executor takes its resolved spec and context, writes into ctx.out_dir and returns summary metrics."""


@dataclass
class StepOutcome:
    name: str
    kind: str
    state: str  # "cached" | "done" | "failed" | "interrupted" | "skipped"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    """Why a step failed or stopped, or what happened to a corrupt entry it replaced."""


@dataclass
class RunReport:
    run_id: str
    record_dir: Path
    outcomes: list[StepOutcome]


class Scheduler:
    def __init__(self, store: Store, executors: Mapping[str, Executor], reporter: Reporter, verify: bool = False):
        self.store = store
        self.executors = executors
        self.reporter = reporter
        self.verify = verify
        """Re-hash every stored file of a cached step before using it, not only files that changed since last hashed."""
        self.outcomes: list[StepOutcome] = []
        """Steps of the latest run so far: complete after a failure too, for the report."""

    def run(self, plan: Plan, record: RunRecord, *, only: set[str] | None = None, force: set[str] = frozenset()) -> RunReport:
        """Run the plan (or `only` these steps and what they need). `force` re-runs steps even if stored."""
        self.store.sweep()
        wanted = plan.upstream_of(only) if only else {s.name for s in plan.steps}
        self.outcomes = []
        for step in plan.steps:
            if step.name not in wanted:
                self.outcomes.append(StepOutcome(step.name, step.kind, "skipped"))
                continue
            preemption.check()  # a safe point: nothing of the next step exists yet
            self.outcomes.append(self._run_step(plan, step, record, forced=step.name in force))
        return RunReport(run_id=record.run_id, record_dir=record.dir, outcomes=self.outcomes)

    def _run_step(self, plan: Plan, step: PlanStep, record: RunRecord, forced: bool) -> StepOutcome:
        """Under the entry's lock: a run of another recipe computing the same step is waited for, then found stored."""
        lock = self.store.entry_lock(step.fingerprint, {"run_id": record.run_id, "step": step.name})
        lock.acquire(wait=True, on_wait=lambda holder: self.reporter.log(
            step.name, f"waiting for {holder}, which is computing this step (it is stored once, for both runs)"))
        try:
            if forced:
                self.store.forget(step.fingerprint)
            checked = self.store.check(step.fingerprint, full=self.verify)
            if checked.ok:
                return self._cached(plan, step, record, checked.manifest or {})
            note = None
            if checked.state == "corrupt":
                note = f"stored output was corrupt ({checked.summary()}); computed again"
                self.reporter.log(step.name, f"the stored output in {self.store.path(step.fingerprint)} does not match "
                                             f"its manifest ({checked.summary()}): computing it again")
                record.event({"event": "entry_corrupt", "step": step.name, "fingerprint": step.fingerprint,
                              "drifts": [str(d) for d in checked.drifts]})
                self.store.forget(step.fingerprint)
            outcome = self._compute(plan, step, record)
            outcome.note = note
            return outcome
        finally:
            lock.release()

    def _cached(self, plan: Plan, step: PlanStep, record: RunRecord, manifest: dict[str, Any]) -> StepOutcome:
        self.reporter.step_cached(step.name, step.kind)
        record.event({"event": "step_cached", "step": step.name, "fingerprint": step.fingerprint})
        self.store.remember(plan.name, step.name, step.fingerprint)
        return StepOutcome(step.name, step.kind, "cached", metrics=manifest.get("metrics", {}))

    def _compute(self, plan: Plan, step: PlanStep, record: RunRecord) -> StepOutcome:
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
            metrics = self._execute(step, ctx, record)
            seconds = time.perf_counter() - clock
            with preemption.deferred():  # a stop request waits for the commit: no half-committed step
                self._commit(plan, step, record, staging, started, seconds, metrics)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # after a commit it is gone already
        return StepOutcome(step.name, step.kind, "done", seconds, metrics)

    def _execute(self, step: PlanStep, ctx: StepContext, record: RunRecord) -> dict[str, Any]:
        try:
            return self.executors[step.kind](step.spec, ctx)
        except (preemption.Interrupted, KeyboardInterrupt) as stop:
            saved = getattr(stop, "saved", None)
            if isinstance(stop, preemption.Interrupted):
                stop.step = stop.step or step.name
            reason = stop.request.reason if isinstance(stop, preemption.Interrupted) else "SIGINT"
            self.outcomes.append(StepOutcome(step.name, step.kind, "interrupted", note=str(stop) or reason))
            self.reporter.log(step.name, f"interrupted ({str(stop) or reason}); its resume state stays in {ctx.scratch_dir}")
            record.note({"event": "step_interrupted", "step": step.name, "reason": reason, "saved": saved})
            raise
        except StepError as error:
            raise self._failed(step, record, str(error)) from None
        except Exception as error:
            if (problem := storage_problem(error)) is not None:
                message = describe(problem, what_failed(error, f"while {step.name} ran"), self.store.workdir,
                                   self._kept(step))
                raise self._failed(step, record, message) from None
            # A bug, not a user mistake: keep the traceback in the run record.
            details = record.keep(f"{step.name}.traceback.txt", traceback.format_exc())
            failure = self._failed(step, record, f"unexpected {type(error).__name__}: {error}")
            failure.details = details
            raise failure from error

    def _commit(self, plan: Plan, step: PlanStep, record: RunRecord, staging: Path, started: dt.datetime,
                seconds: float, metrics: dict[str, Any]) -> None:
        manifest = {
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
        }
        try:
            self.store.commit(step.fingerprint, staging, manifest)
        except OSError as error:
            if (problem := storage_problem(error)) is None:
                raise
            message = describe(problem, what_failed(error, f"committing {step.name}"), self.store.workdir,
                               self._kept(step))
            self.outcomes.append(StepOutcome(step.name, step.kind, "failed", note=message))
            self.reporter.step_failed(step.name, step.kind, message)
            raise StorageError(message) from None
        self.store.remember(plan.name, step.name, step.fingerprint)
        self.reporter.step_done(step.name, step.kind, seconds, metrics)
        record.event({"event": "step_done", "step": step.name, "seconds": round(seconds, 3), "metrics": metrics})

    def _failed(self, step: PlanStep, record: RunRecord, message: str) -> StepFailed:
        self.outcomes.append(StepOutcome(step.name, step.kind, "failed", note=message))
        self.reporter.step_failed(step.name, step.kind, message)
        record.note({"event": "step_failed", "step": step.name, "message": message})
        return StepFailed(step.name, message)

    def _kept(self, step: PlanStep) -> str:
        """What a failed run leaves for the next one: the steps in the store, and this step's resume state."""
        finished = [o.name for o in self.outcomes if o.state in ("done", "cached")]
        kept = f"the store's finished steps ({', '.join(finished)})" if finished else "the store's earlier entries"
        scratch = self.store.scratch_root / step.fingerprint
        if scratch.is_dir() and any(scratch.iterdir()):
            kept += f" and {step.name}'s resume state in {scratch}"
        return kept
