"""One `llmrecipe run`: take the recipe's lock, open a run record, run the plan, and leave a true record of how it
ended (finished, failed, or interrupted by a signal or the `max_time` deadline) however it ends.

Two runs of one recipe (one [run] name) in a workdir would compete for the same resume state, so the second one
refuses, naming the holder, or waits for it (`wait`). Runs of different recipes share the workdir's store at the
same time: the scheduler's per-entry locks make a step they both need computed once.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Iterator, Mapping

from llmrecipe import preemption
from llmrecipe.errors import StorageError, WorkdirBusy
from llmrecipe.plan.plan import Plan
from llmrecipe.recipe.load import LoadedRecipe
from llmrecipe.run.context import Reporter
from llmrecipe.run.locks import FileLock, LockHeld, lock_name
from llmrecipe.run.provenance import run_manifest
from llmrecipe.run.record import RunRecord, new_run_id
from llmrecipe.run.report import write_report
from llmrecipe.run.scheduler import Executor, RunReport, Scheduler
from llmrecipe.run.space import describe, storage_problem, what_failed
from llmrecipe.run.status import step_status
from llmrecipe.run.store import Store


def recipe_lock(workdir: Path, name: str, run_id: str) -> FileLock:
    return FileLock(workdir / "locks" / f"run-{lock_name(name)}.lock", {"run_id": run_id, "recipe": name})


def run_recipe(loaded: LoadedRecipe, plan: Plan, executors: Mapping[str, Executor], reporter: Reporter, *,
               only: set[str] | None = None, force: set[str] = frozenset(), wait: bool = False,
               verify: bool = False) -> RunReport:
    workdir = Path(plan.workdir)
    run_id = new_run_id(plan.name)
    with preemption.handling(loaded.recipe.run.max_seconds), _storage_errors(workdir, "starting the run"):
        lock = recipe_lock(workdir, plan.name, run_id)
        try:
            lock.acquire(wait=wait, on_wait=lambda holder: reporter.log(
                plan.name, f"waiting for the run of this recipe by {holder} to end"))
        except LockHeld as held:
            raise WorkdirBusy(
                f"{workdir} is in use by another run of recipe '{plan.name}': {held.holder}; wait for it with "
                "--wait, or give this run another workdir (--workdir)"
            ) from None
        try:
            return _run_locked(loaded, plan, executors, reporter, run_id, only, force, verify)
        finally:
            lock.release()


def _run_locked(loaded: LoadedRecipe, plan: Plan, executors: Mapping[str, Executor], reporter: Reporter, run_id: str,
                only: set[str] | None, force: set[str], verify: bool) -> RunReport:
    workdir = Path(plan.workdir)
    record = RunRecord(workdir, plan.name, run_id)
    record.write_text("recipe.toml", loaded.path.read_text(encoding="utf-8"))
    record.write_json("recipe.json", loaded.recipe.model_dump(mode="json"))
    record.write_json("plan.json", plan.record())
    scheduler = Scheduler(Store(workdir), executors, reporter, verify=verify)
    ending: dict[str, object] = {"outcome": "running", "failure": None, "stop": None}
    _write_manifest(record, loaded, plan, scheduler, "running")  # a killed run's record says it never ended
    try:
        report = scheduler.run(plan, record, only=only, force=force)
        ending["outcome"] = "finished"
        return report
    except preemption.Interrupted as stop:
        ending.update(outcome="interrupted", failure=str(stop),
                      stop={"reason": stop.request.reason, "exit_code": stop.exit_code, "saved": stop.saved})
        raise
    except KeyboardInterrupt:
        ending.update(outcome="interrupted", failure="interrupted", stop={"reason": "SIGINT", "exit_code": 130})
        raise
    except BaseException as error:
        ending.update(outcome="failed", failure=str(error) or type(error).__name__)
        raise
    finally:
        with preemption.deferred():  # a second signal now would only leave the record half-written
            _finish(record, loaded, plan, scheduler, ending)


def _finish(record: RunRecord, loaded: LoadedRecipe, plan: Plan, scheduler: Scheduler, ending: dict) -> None:
    """report.md/json, status.json and manifest.json. A full disk here must not hide how the run ended: when the run
    itself finished, the error is raised; otherwise the record lists what it could not write."""
    outcome = str(ending["outcome"])
    problems = []
    for write in (
        lambda: write_report(record.dir, plan, scheduler.outcomes, record.run_id, ending["failure"], outcome,
                             ending["stop"]),
        lambda: record.write_json("status.json", step_status(plan, scheduler.store)),
        lambda: _write_manifest(record, loaded, plan, scheduler, outcome),
    ):
        try:
            write()
        except OSError as error:
            if storage_problem(error) is None:
                raise
            problems.append(error)
    record.close()
    if problems and outcome == "finished":
        problem = storage_problem(problems[0]) or "full"
        raise StorageError(describe(problem, what_failed(problems[0], f"writing the run record {record.dir}"),
                                    record.dir, "every step's output in the store (the run itself finished)"))


def _write_manifest(record: RunRecord, loaded: LoadedRecipe, plan: Plan, scheduler: Scheduler, outcome: str) -> None:
    states = {o.name: o.state for o in scheduler.outcomes}
    record.write_json("manifest.json", run_manifest(plan, record.run_id, outcome, states,
                                                    loaded.recipe.model_dump(mode="json"), loaded.path))


@contextlib.contextmanager
def _storage_errors(workdir: Path, what: str) -> Iterator[None]:
    """A full or read-only workdir met outside a step (the lock, the run record, the index) as one clear line."""
    try:
        yield
    except OSError as error:
        problem = storage_problem(error)
        if problem is None or error.errno == errno.EEXIST:
            raise
        raise StorageError(describe(problem, what_failed(error, what), workdir,
                                    "every finished step in the store, and any resume state in scratch/")) from None
