"""Run a sweep: check every trial, then run those without a result, record each as it ends, and write the
sweep's records. Run again, it picks up where it stopped: trials with a result are not run again, and a trial
that was interrupted runs again through the ordinary run, which resumes its training from the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmrecipe.errors import WorkdirBusy
from llmrecipe.run.locks import FileLock, LockHeld, lock_name
from llmrecipe.sweep.engines import engine_for
from llmrecipe.sweep.prepare import PlannedTrial, SweepSetup, plan_trial
from llmrecipe.sweep.early_stop import EarlyStop
from llmrecipe.sweep.propose import FixedTrials, TpeTrials, corner_trials, proposer_for
from llmrecipe.sweep.record import read_result, result_path, trial_row, write_sweep_json, write_trials

Say = Callable[[str], None]


@dataclass
class SweepOutcome:
    folder: Path
    rows: list[dict[str, Any]]
    ran: int
    """Trials run by this call (the others had a result from an earlier one)."""
    reused: int
    interrupted: int


def check_trials(setup: SweepSetup) -> list[PlannedTrial]:
    """Every trial of a grid or random sweep, planned (a RecipeError names the first bad value); for TPE, whose
    trials are chosen as it goes, trials that set every listed value and both ends of every range."""
    proposer = proposer_for(setup.sweep, setup.seed, setup.metric)
    if setup.sweep.method == "tpe":
        for trial in corner_trials(setup.sweep):
            plan_trial(setup, trial)
        return []
    (trials,) = list(proposer.batches())
    return [plan_trial(setup, trial) for trial in trials]


def run_sweep(setup: SweepSetup, say: Say = lambda line: None, search=None) -> SweepOutcome:
    """Check the trials, then run them (or what is left of them) under the sweep's lock. `search` chooses the
    trials instead of the sweep's method (`--smallest`): a proposer built from the checked trials."""
    checked = {p.index: p for p in check_trials(setup)}
    (setup.folder / "trials").mkdir(parents=True, exist_ok=True)
    lock = FileLock(setup.workdir / "locks" / f"{lock_name(setup.sweep_id)}.lock", {"sweep": setup.sweep_id})
    try:
        lock.acquire()
    except LockHeld as held:
        raise WorkdirBusy(f"sweep {setup.sweep_id} is running already: {held.holder}; wait for it to end") from None
    try:
        proposer = search(list(checked.values())) if search else proposer_for(setup.sweep, setup.seed, setup.metric)
        return _run_locked(setup, checked, proposer, say)
    finally:
        lock.release()


def _run_locked(setup: SweepSetup, checked: dict[int, PlannedTrial], proposer, say: Say) -> SweepOutcome:
    sweep = setup.sweep
    engine = engine_for(sweep.engine, sweep.parallel, sweep.address)
    early = _early_stop(setup, proposer)
    rows: list[dict[str, Any]] = []
    counts = {"ran": 0, "reused": 0, "interrupted": 0}
    device = "cpu"
    write_sweep_json(setup, "running", counts, device)
    try:
        for batch in proposer.batches():
            planned = [checked.get(trial.index) or plan_trial(setup, trial) for trial in batch]
            device = planned[0].plan.device if planned else device
            results = _run_batch(setup, planned, engine, counts, say, early, getattr(proposer, "asked", None))
            proposer.tell(batch, results)
            rows += [trial_row(setup, p, results[p.index]) for p in planned if p.index in results]
            write_trials(setup, rows)
            if counts["interrupted"]:
                break  # a TPE sweep's next batch depends on this one's results; the next call finishes it
        outcome = "interrupted" if counts["interrupted"] else "finished"
    except BaseException:  # Ctrl-C (its trials stop with a checkpoint), or an error of the sweep itself
        outcome = "interrupted"
        raise
    finally:
        engine.close()
        write_sweep_json(setup, outcome, {**counts, "recorded": len(rows)}, device)
    return SweepOutcome(setup.folder, rows, counts["ran"], counts["reused"], counts["interrupted"])


def _early_stop(setup: SweepSetup, proposer) -> EarlyStop | None:
    """The sweep's pruner, when it has one; a TPE sweep's lives in its study, so TPE learns which trials fell
    behind. A `--smallest` search trains each size to the end: it needs their final losses."""
    if setup.sweep.early_stop == "none" or not isinstance(proposer, (FixedTrials, TpeTrials)):
        return None
    return EarlyStop(setup.sweep.early_stop, setup.goal, proposer.study if isinstance(proposer, TpeTrials) else None)


def _watching(setup: SweepSetup, trial: PlannedTrial, early: EarlyStop, proposer_asked: Any) -> dict[str, Any]:
    """The trial's job, with the validation losses early stopping reads: its training step's metrics.jsonl."""
    early.start(trial.index, proposer_asked)
    fingerprint = trial.facts["fingerprints"].get(setup.model_step or "")
    metrics = setup.workdir / "scratch" / str(fingerprint) / "metrics.jsonl"
    return {**job_of(setup, trial), "watch": str(metrics) if fingerprint else None}


def _run_batch(setup: SweepSetup, planned: list[PlannedTrial], engine, counts: dict[str, int],
               say: Say, early: EarlyStop | None = None, asked: dict[int, Any] | None = None) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    jobs = []
    for trial in planned:  # a result is reused while the trial's steps are what they were (same input files too)
        earlier = read_result(setup, trial.index)
        if earlier is not None and earlier.get("fingerprints") == trial.facts["fingerprints"]:
            results[trial.index] = earlier
            counts["reused"] += 1
            continue
        jobs.append(_watching(setup, trial, early, (asked or {}).get(trial.index)) if early else job_of(setup, trial))
    if len(results):
        say(f"{len(results)} trials have results from an earlier run of this sweep; {len(jobs)} to run")
    def watch(job: dict[str, Any]) -> str | None:
        return early.should_stop(job["trial"], Path(job["watch"])) if early and job.get("watch") else None

    for job, result in engine.run(jobs, watch if early else None):
        if early:
            early.finish(job["trial"], result or {"state": "failed"}, (result or {}).get("metrics", {}).get(setup.metric))
        if result is None:
            counts["interrupted"] += 1
            say(f"trial {job['trial']} interrupted; run the same command to resume it")
            continue
        counts["ran"] += 1
        results[job["trial"]] = result
        say(_summary(setup, job["trial"], result))
    return results


def job_of(setup: SweepSetup, trial: PlannedTrial) -> dict[str, Any]:
    """What a worker needs to run the trial: plain JSON, so it crosses to another process or Ray node."""
    training = [step.spec.get("nproc", 1) for step in trial.plan.steps if step.kind in ("pretrain", "finetune")]
    processes = max(training, default=1)
    return {"trial": trial.index, "recipe": str(setup.loaded.path), "overrides": trial.overrides,
            "workdir": str(setup.workdir), "result": str(result_path(setup, trial.index)),
            "log": str(result_path(setup, trial.index).with_suffix(".log")),
            "cpus": processes, "gpus": processes if trial.plan.device == "cuda" else 0,
            "fingerprints": trial.facts["fingerprints"]}


def _summary(setup: SweepSetup, index: int, result: dict[str, Any]) -> str:
    if result["state"] == "pruned":
        return f"trial {index} {result['error']}"
    if result["state"] != "done":
        return f"trial {index} failed: {result['error']}"
    value = result["metrics"].get(setup.metric)
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"trial {index} done in {result['seconds']:.0f}s: {setup.metric} = {shown}"

