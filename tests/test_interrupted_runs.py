"""What an interrupted training step tells the user: the report says where it stopped and how to continue, `plan`
and `status` call the step partial with its progress, the resumed step's summary covers every segment, and MFU
never passes 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrecipe import api, preemption
from llmrecipe.run.reporter import LineProgress, LineReporter
from llmrecipe.training import speed as speed_module
from llmrecipe.training.saved import saved_step
from llmrecipe.training.speed import Speed
from tests.conftest import write_tiny_recipe


class StoppingReporter(LineReporter):
    """Asks the run to stop (as SIGTERM would) once training has done `after` steps."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def progress(self, name, total, unit, completed=0):
        reporter = self

        class Stopping(LineProgress):
            def advance(self, n=1, **fields):
                super().advance(n, **fields)
                if unit == "steps" and self.completed >= reporter.after:
                    preemption._state.request = preemption.Request("SIGTERM")

        return Stopping(self.out, name, total, unit, completed)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny recipe stopped at step 13 of 40 of `base`: (recipe, the run record)."""
    folder = tmp_path_factory.mktemp("interrupted")
    recipe = write_tiny_recipe(folder, steps=40)
    with pytest.raises(preemption.Interrupted):
        api.run(api.load(recipe), reporter=StoppingReporter(after=12))  # seen at the next step end
    record = max((folder / "work" / "runs").iterdir())
    return recipe, record


def test_the_report_says_where_the_run_stopped_and_how_to_continue(interrupted):
    _, record = interrupted
    report = json.loads((record / "report.json").read_text())
    assert {s["step"]: s["state"] for s in report["steps"]}["base"] == "interrupted at step 13 of 40"
    markdown = (record / "report.md").read_text()
    assert "**Interrupted:** `base` interrupted at step 13 of 40 (SIGTERM received (checkpoint at step 13 of 40)); " \
           "run the same command to resume." in markdown
    assert "Failed" not in markdown and "KeyboardInterrupt" not in markdown


def test_plan_and_status_call_the_step_partial_with_its_progress(interrupted, capsys):
    from llmrecipe.cli import main

    recipe, _ = interrupted
    plan = api.compile(api.load(recipe))
    assert api.states(plan)["base"] == "partial (step 13 of 40)"
    assert saved_step(Path(plan.workdir) / "scratch" / plan.step("base").fingerprint) == 13
    rows = {row["step"]: row for row in api.status(plan)}
    assert rows["base"]["state"] == "partial (step 13 of 40)" and rows["base"]["saved_step"] == 13
    assert main(["plan", str(recipe)]) == 0
    assert "partial (step 13 of 40)" in capsys.readouterr().out


def test_the_resumed_summary_covers_every_segment_of_the_step(interrupted):
    recipe, _ = interrupted
    plan = api.compile(api.load(recipe))
    checkpoint = Path(plan.workdir) / "scratch" / plan.step("base").fingerprint / "checkpoints" / "step-00000013"
    first_segment = json.loads((checkpoint / "state.json").read_text())["counters"]
    api.run(api.load(recipe))
    metrics = json.loads((api.artifact(plan, "base") / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == 40 and metrics["tokens"] == 40 * plan.step("base").spec["tokens_per_step"]
    assert metrics["train_seconds"] > first_segment["train_seconds"] > 0  # both segments, not the last one
    seconds = metrics["train_seconds"]  # rounded to 0.01 s, which on a fast run is a few percent of it
    assert metrics["tokens"] / (seconds + 0.006) <= metrics["tokens_per_s"] <= metrics["tokens"] / (seconds - 0.006)


def test_mfu_never_passes_one_a_fresh_probe_raises_the_peak_or_the_figure_is_capped(monkeypatch):
    monkeypatch.setattr(speed_module, "matmul_peak_flops", lambda device, precision: 1e6)  # a probe that read low
    monkeypatch.setattr(speed_module, "measured_peaks", lambda: {})
    monkeypatch.setattr(speed_module, "record_peak", lambda *args: None)
    monkeypatch.setattr(speed_module, "measure_matmul_flops", lambda device, precision, seconds: 1e9)
    speed = Speed("cpu", "fp32", flops_per_token=1000, processes=1, main=True, seconds=1.0, tokens=10_000)
    assert speed.mfu() == pytest.approx(1e7 / 1e9) and not speed.capped  # 10^7 FLOP/s against the new peak
    monkeypatch.setattr(speed_module, "measure_matmul_flops", lambda device, precision, seconds: 1e6)
    slow_probe = Speed("cpu", "fp32", flops_per_token=1000, processes=1, main=True, seconds=1.0, tokens=10_000)
    assert slow_probe.mfu() == 1.0 and slow_probe.figures()["mfu_capped"] is True


def test_the_best_peak_recorded_on_this_machine_counts(monkeypatch):
    monkeypatch.setattr(speed_module, "matmul_peak_flops", lambda device, precision: 1e6)
    monkeypatch.setattr(speed_module, "measured_peaks", lambda: {"cpu/fp32": 5e8})
    monkeypatch.setattr(speed_module, "record_peak", lambda *args: None)
    assert Speed("cpu", "fp32", 1000, 1, True).peak == 5e8
