"""Stop requests: SIGTERM, SIGINT and `max_time` stop at a safe point with a checkpoint and a true run record, and
the same command resumes to the bytes of an uninterrupted run.

The training step here is the stand-in of tests/fake_steps.py, which polls `preemption.pending()` at each step
boundary the way the trainer does; the CLI, the scheduler, the run record and the exit codes are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from llmrecipe import api, preemption
from llmrecipe.errors import RecipeError
from tests.conftest import write_tiny_recipe
from tests.fake_steps import Run

# --- the module on its own, in this process -------------------------------------------------------------------


def test_inside_a_deferred_section_a_signal_is_only_recorded():
    found = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: an in-process Ray instance installs its own
    with preemption.handling():
        with preemption.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert preemption.pending() == preemption.Request("SIGTERM")
        with pytest.raises(preemption.Interrupted) as stopped:
            preemption.check()
        assert stopped.value.exit_code == 143
    assert preemption.pending() is None  # handling() leaves the process as it found it
    assert signal.getsignal(signal.SIGTERM) == found


def test_a_forwarded_request_never_escalates_a_pending_one():
    """A scheduler's SIGTERM reaches the whole process group and the parent forwards it too: one request, not two."""
    with preemption.handling():
        with preemption.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            os.kill(os.getpid(), preemption.FORWARD_SIGNAL)
            time.sleep(0.01)
            assert preemption.pending() == preemption.Request("SIGTERM")
        with preemption.deferred():
            pass
    with preemption.handling():
        with preemption.deferred():
            os.kill(os.getpid(), preemption.FORWARD_SIGNAL)  # alone it is a request like SIGTERM
            time.sleep(0.01)
            assert preemption.pending() == preemption.Request("SIGTERM")


def test_outside_a_deferred_section_a_signal_interrupts_at_once():
    with preemption.handling():
        with pytest.raises(preemption.Interrupted) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        assert stopped.value.request.reason == "SIGINT" and stopped.value.exit_code == 130


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM-later"])
def test_a_second_signal_stops_even_inside_a_deferred_section(second):
    with preemption.handling(), preemption.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01 if second == signal.SIGINT else preemption.TERM_ECHO_SECONDS + 0.1)
        with pytest.raises(preemption.Interrupted):
            os.kill(os.getpid(), second)
            time.sleep(5)


def test_a_sigterm_delivered_twice_at_once_is_one_request():
    """A scheduler signals every process of the job, and a launcher passes the signal on to its workers too."""
    with preemption.handling(), preemption.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert preemption.pending() == preemption.Request("SIGTERM")


def test_the_deadline_is_pending_inside_and_interrupts_outside_a_deferred_section():
    with preemption.handling(max_seconds=0.2):
        with preemption.deferred():
            time.sleep(0.3)
            assert preemption.pending() == preemption.Request("max_time")
    started = time.monotonic()
    with preemption.handling(max_seconds=0.2):
        with pytest.raises(preemption.Interrupted) as stopped:
            time.sleep(5)
    assert stopped.value.exit_code == 75 and time.monotonic() - started < 2
    assert os.environ.get(preemption.DEADLINE_ENV) is None


def test_max_time_is_validated_as_a_duration(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    assert api.load(recipe, ["run.max_time=3h50m"]).recipe.run.max_seconds == 13800
    with pytest.raises(RecipeError, match=r"run.max_time = '3 hours': not a duration.*\"3h50m\""):
        api.load(recipe, ["run.max_time='3 hours'"])


# --- through the CLI, with a stand-in training step -----------------------------------------------------------


def fake_recipe(folder: Path, steps: int = 150) -> Path:
    return write_tiny_recipe(folder, steps=steps, checkpoint_every=50)


def stored_weights(recipe: Path) -> str:
    plan = api.compile(api.load(recipe))
    return (Path(plan.workdir) / "store" / plan.step("base").fingerprint / "weights.txt").read_text()


def latest_record(recipe: Path) -> Path:
    runs = sorted((recipe.parent / "work" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> str:
    """The stand-in training step's weights after a run nothing interrupted."""
    recipe = fake_recipe(tmp_path_factory.mktemp("straight"))
    assert Run(recipe).finish() == 0
    return stored_weights(recipe)


@pytest.mark.e2e
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_training_saves_a_checkpoint_and_a_true_record_then_resumes(tmp_path, signum, code, uninterrupted):
    recipe = fake_recipe(tmp_path / "stopped")
    run = Run(recipe)
    run.wait_for("[base] step 20")
    os.killpg(run.process.pid, signum)
    assert run.finish() == code, run.output()
    name = signal.Signals(signum).name
    assert f"interrupted: {name} received (checkpoint at step" in run.output()
    assert "during step 'base'; run the same command to resume" in run.output()
    assert "Traceback" not in run.output()

    plan = api.compile(api.load(recipe))
    checkpoint = json.loads((recipe.parent / "work" / "scratch" / plan.step("base").fingerprint / "checkpoint.json").read_text())
    assert 20 <= checkpoint["step"] < 150  # written at the signal, not at the periodic step 50
    record = latest_record(recipe)
    report = json.loads((record / "report.json").read_text())
    assert report["outcome"] == "interrupted"
    assert report["stopped"] == {"reason": name, "exit_code": code, "saved": f"checkpoint at step {checkpoint['step']}"}
    assert {s["step"]: s["state"] for s in report["steps"]}["base"] == "interrupted"
    assert json.loads((record / "manifest.json").read_text())["outcome"] == "interrupted"
    status = {row["step"]: row for row in json.loads((record / "status.json").read_text())}
    assert status["base"]["state"] == "ready" and status["base"]["resumes"] is True
    events = [json.loads(line) for line in (record / "events.jsonl").read_text().splitlines()]
    assert {"event": "step_interrupted", "step": "base", "reason": name} .items() <= events[-1].items()

    resumed = Run(recipe)
    assert resumed.finish() == 0, resumed.output()
    assert f"resumed from checkpoint at step {checkpoint['step']}" in resumed.output()
    assert stored_weights(recipe) == uninterrupted


@pytest.mark.e2e
def test_max_time_stops_with_exit_75_and_the_same_command_continues(tmp_path, uninterrupted):
    recipe = fake_recipe(tmp_path / "timed")
    codes, started = [], time.monotonic()
    while not codes or codes[-1] == 75:
        run = Run(recipe, "--set", "run.max_time=1s", env={"FAKE_STEP_SECONDS": "0.015"})
        codes.append(run.finish())
        assert codes[-1] in (0, 75), run.output()
        assert len(codes) < 15 and time.monotonic() - started < 120
    assert len(codes) >= 3 and set(codes[:-1]) == {75} and codes[-1] == 0  # 150 steps of 15 ms, a second at a time
    assert "the max_time deadline was reached (checkpoint at step" in latest_record_output(recipe)
    assert stored_weights(recipe) == uninterrupted


def latest_record_output(recipe: Path) -> str:
    """The failure line of the newest interrupted run's report."""
    for record in sorted((recipe.parent / "work" / "runs").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        report = json.loads((record / "report.json").read_text())
        if report["outcome"] == "interrupted":
            return report["failure"]
    return ""


@pytest.mark.e2e
def test_a_signal_outside_a_deferred_section_stops_at_once_and_commits_nothing(tmp_path):
    recipe = fake_recipe(tmp_path / "data")
    run = Run(recipe, env={"FAKE_DATA_SECONDS": "30"})
    run.wait_for("[corpus] reading")
    sent = time.monotonic()
    os.killpg(run.process.pid, signal.SIGTERM)
    assert run.finish() == 143, run.output()
    assert time.monotonic() - sent < 5
    assert "interrupted: SIGTERM received during step 'corpus'; run the same command to resume" in run.output()
    report = json.loads((latest_record(recipe) / "report.json").read_text())
    assert report["outcome"] == "interrupted" and report["steps"][0]["state"] == "interrupted"
    work = recipe.parent / "work"
    assert not list((work / "store").glob("*")) and not list((work / "staging").glob("*"))


@pytest.mark.e2e
def test_a_second_signal_stops_a_step_whose_safe_point_never_comes(tmp_path):
    recipe = fake_recipe(tmp_path / "stuck")
    run = Run(recipe, env={"FAKE_NEVER_SAFE": "1", "FAKE_STEP_SECONDS": "0.05"})
    run.wait_for("[base] step 5")
    os.killpg(run.process.pid, signal.SIGTERM)
    time.sleep(preemption.TERM_ECHO_SECONDS + 0.5)
    assert run.process.poll() is None  # recorded, waiting for a safe point
    os.killpg(run.process.pid, signal.SIGTERM)
    assert run.finish() == 143, run.output()
    assert json.loads((latest_record(recipe) / "report.json").read_text())["outcome"] == "interrupted"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_during_real_pretraining_keeps_its_checkpoints_and_a_true_record_then_resumes(tmp_path, nproc):
    """With two processes the signal reaches the whole group and the parent forwards it as well: every process
    stops at the end of the same step, the main one saving the checkpoint, and no process dies half-way."""
    recipe = write_tiny_recipe(tmp_path, steps=150, checkpoint_every=20)
    nprocs = ("--set", f"run.nproc={nproc}")
    run = Run(recipe, *nprocs, module="llmrecipe")
    scratch = tmp_path / "work" / "scratch"
    deadline = time.monotonic() + 300
    while not list(scratch.glob("*/checkpoints/step-*/state.json")):
        assert run.process.poll() is None and time.monotonic() < deadline, run.output()
        time.sleep(0.05)
    os.killpg(run.process.pid, signal.SIGTERM)
    assert run.finish() == 143, run.output()
    assert "interrupted: SIGTERM received" in run.output() and "during step 'base'" in run.output()
    assert list(scratch.glob("*/checkpoints/step-*/state.json"))
    report = json.loads((latest_record(recipe) / "report.json").read_text())
    assert report["outcome"] == "interrupted" and report["stopped"]["reason"] == "SIGTERM"
    resumed = Run(recipe, *nprocs, module="llmrecipe")
    assert resumed.finish(timeout=600) == 0, resumed.output()
    assert "resumed from checkpoint" in resumed.output()
