"""The scheduler and store with stand-in executors: caching, atomic commits, failures, locking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrecipe.errors import StepError, StepFailed
from llmrecipe.plan.plan import Plan, PlanStep
from llmrecipe.run.locks import LockHeld
from llmrecipe.run.record import RunRecord
from llmrecipe.run.reporter import LineReporter
from llmrecipe.run.scheduler import Scheduler
from llmrecipe.run.session import recipe_lock
from llmrecipe.run.status import step_states
from llmrecipe.run.store import MANIFEST, Store


def make_plan(workdir: Path, version: str = "1") -> Plan:
    def step(name, inputs):
        return PlanStep(name=name, kind="echo", inputs=inputs, spec={"text": name}, executor_version=1,
                        fingerprint=f"{name}-{version}")
    return Plan(name="t", seed=0, workdir=str(workdir), device="cpu",
                steps=[step("a", {}), step("b", {"up": "a"}), step("c", {"up": "b"})])


class Echo:
    """Writes its spec's text plus its input's text; can be told to fail on one step."""

    def __init__(self, fail_on: str | None = None, error: type[Exception] = StepError):
        self.calls: list[str] = []
        self.fail_on, self.error = fail_on, error

    def __call__(self, spec, ctx):
        self.calls.append(ctx.name)
        if ctx.name == self.fail_on:
            raise self.error("no luck")
        upstream = (ctx.inputs["up"] / "out.txt").read_text() if "up" in ctx.inputs else ""
        (ctx.out_dir / "out.txt").write_text(upstream + spec["text"])
        return {"length": len(upstream) + 1}


def run(workdir: Path, plan: Plan, executor, **kwargs):
    store = Store(workdir)
    record = RunRecord(workdir, "t")
    try:
        return Scheduler(store, {"echo": executor}, LineReporter()).run(plan, record, **kwargs), store
    finally:
        record.close()


def test_runs_in_order_then_everything_is_cached(tmp_path):
    plan, echo = make_plan(tmp_path), Echo()
    report, store = run(tmp_path, plan, echo)
    assert echo.calls == ["a", "b", "c"]
    assert (store.path("c-1") / "out.txt").read_text() == "abc"
    manifest = json.loads((store.path("c-1") / MANIFEST).read_text())
    assert manifest["metrics"] == {"length": 3} and manifest["inputs"] == {"up": "b-1"}
    again = Echo()
    report, _ = run(tmp_path, plan, again)
    assert again.calls == []
    assert [o.state for o in report.outcomes] == ["cached"] * 3


def test_states_are_cached_stale_and_ready(tmp_path):
    run(tmp_path, make_plan(tmp_path), Echo())
    store = Store(tmp_path)
    assert set(step_states(make_plan(tmp_path), store).values()) == {"cached"}
    changed = make_plan(tmp_path, version="2")
    assert set(step_states(changed, store).values()) == {"stale"}
    renamed = Plan(**{**changed.model_dump(), "name": "fresh"})
    assert set(step_states(renamed, store).values()) == {"ready"}


def test_a_failed_step_commits_nothing_and_keeps_earlier_steps(tmp_path):
    plan = make_plan(tmp_path)
    with pytest.raises(StepFailed, match="step 'b' failed: no luck"):
        run(tmp_path, plan, Echo(fail_on="b"))
    store = Store(tmp_path)
    assert store.is_done("a-1") and not store.is_done("b-1")
    assert not store.path("b-1").exists()
    rerun = Echo()
    run(tmp_path, plan, rerun)
    assert rerun.calls == ["b", "c"]


def test_an_unexpected_exception_keeps_its_traceback_in_the_run_record(tmp_path):
    with pytest.raises(StepFailed) as failure:
        run(tmp_path, make_plan(tmp_path), Echo(fail_on="a", error=ZeroDivisionError))
    assert "unexpected ZeroDivisionError" in failure.value.message
    assert "ZeroDivisionError" in Path(failure.value.details).read_text()


def test_only_runs_a_step_and_what_it_needs(tmp_path):
    echo = Echo()
    report, _ = run(tmp_path, make_plan(tmp_path), echo, only={"b"})
    assert echo.calls == ["a", "b"]
    assert [o.state for o in report.outcomes] == ["done", "done", "skipped"]


def test_force_reruns_a_cached_step(tmp_path):
    run(tmp_path, make_plan(tmp_path), Echo())
    echo = Echo()
    run(tmp_path, make_plan(tmp_path), echo, force={"b"})
    assert echo.calls == ["b"]


def test_leftover_staging_from_a_killed_run_is_cleared(tmp_path):
    store = Store(tmp_path)
    debris = store.new_staging("a-1")
    (debris / "half.bin").write_bytes(b"x")
    run(tmp_path, make_plan(tmp_path), Echo())
    assert not debris.exists()


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    with recipe_lock(tmp_path, "t", "run-1"):
        with pytest.raises(LockHeld, match=r"pid \d+ on .+, started 20\d\d-.+ \(run run-1\)"):
            with recipe_lock(tmp_path, "t", "run-2"):
                pass
        with recipe_lock(tmp_path, "another recipe", "run-3"):  # another recipe in the same workdir may run
            pass
    with recipe_lock(tmp_path, "t", "run-4"):  # released on exit
        pass
