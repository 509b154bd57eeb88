"""torch.distributed on CPU (gloo): two processes follow the one-process loss curve, and a checkpoint written
by N processes resumes in M."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmrecipe import api
from llmrecipe.errors import RecipeError
from llmrecipe.host import core_count
from llmrecipe.models.build import build_model
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.run.context import StepContext
from llmrecipe.run.record import StepEvents
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.processes import on_every_core, train_in_group
from llmrecipe.training.checkpoint import save_weights
from llmrecipe.training.distributed import World
from tests.conftest import write_tiny_recipe
from tests.test_training import SHAPE, make_spec, token_files, trainer

pytestmark = pytest.mark.e2e  # whole recipes, processes or servers: not in the inner loop


def train_target(raw_spec: dict, ctx: StepContext, world: World) -> None:
    """One process of a run: trains on the token files next to its scratch folder; rank 0 saves the results."""
    spec = PretrainSpec.model_validate(raw_spec)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    summary = trainer(spec, model, ctx.scratch_dir.parent.parent, ctx, world).fit()
    save_weights(model, ctx.scratch_dir / "final.safetensors", world)  # collective under FSDP
    if world.is_main:
        (ctx.scratch_dir / "records.json").write_text(json.dumps(summary["metrics_records"]))


def run_with(tmp_path: Path, name: str, spec: PretrainSpec, nproc: int, checkpoint_from: Path | None = None):
    """Train in `nproc` processes (in this one when 1), optionally resuming from a copied checkpoint."""
    scratch = tmp_path / "runs" / name
    scratch.mkdir(parents=True)
    if checkpoint_from is not None:
        shutil.copytree(checkpoint_from, scratch / "checkpoints" / checkpoint_from.name)
    ctx = StepContext(name=name, inputs={}, out_dir=scratch / "out", scratch_dir=scratch, device="cpu",
                      reporter=LineReporter(), event=StepEvents(str(scratch / "events.jsonl"), name))
    train_in_group(train_target, spec.model_dump(mode="json"), ctx, nproc, "cpu")
    losses = [r["loss"] for r in json.loads((scratch / "records.json").read_text()) if "loss" in r]
    return load_file(scratch / "final.safetensors"), losses


def assert_close(a: dict, b: dict) -> None:
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("sharding", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_follow_one_and_checkpoints_move_between_process_counts(tmp_path, sharding):
    token_files(tmp_path)
    # Batch 4: one process takes it as 2 micro-batches of 2, two processes one micro-batch of 2 each.
    # Each process's micro-batch is its share of the batch (the plan divides it): 2 = 4 sequences over 2 processes.
    spec = make_spec(total_steps=12, log_every=1, checkpoint_every=5, micro_batch_size=2, sharding=sharding,
                     model=SHAPE.model_copy(update={"dropout": 0.0}))
    one, one_losses = run_with(tmp_path, "one", spec, nproc=1)
    two, two_losses = run_with(tmp_path, "two", spec, nproc=2)
    assert two_losses == pytest.approx(one_losses, rel=1e-4)
    assert_close(two, one)
    for name in ("one", "two"):  # rank 0 of a spawned group logs to the run's events like a one-process step
        events = [json.loads(line) for line in (tmp_path / "runs" / name / "events.jsonl").read_text().splitlines()]
        logged = [e["metrics"]["loss"] for e in events if e["event"] == "metrics" and "loss" in e["metrics"]]
        assert logged == (one_losses if name == "one" else two_losses)
        assert {e["step"] for e in events} == {name}

    # A checkpoint written by 2 processes resumes in 1, and one written by 1 resumes in 2.
    resumed_in_one, _ = run_with(tmp_path, "2to1", spec, 1, tmp_path / "runs" / "two" / "checkpoints" / "step-00000010")
    assert_close(resumed_in_one, one)
    resumed_in_two, _ = run_with(tmp_path, "1to2", spec, 2, tmp_path / "runs" / "one" / "checkpoints" / "step-00000005")
    assert_close(resumed_in_two, one)


def torchrun(recipe: Path, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "llmrecipe", "run",
               str(recipe)]
    return subprocess.run(command, cwd=recipe.parent, env=env, capture_output=True, text=True, timeout=600)


def weights_of(recipe: Path) -> dict:
    plan = api.compile(api.load(recipe))
    return load_file(Path(plan.workdir) / "store" / plan.step("base").fingerprint / "model.safetensors")


def test_llmrecipe_run_under_torchrun_trains_in_every_rank_and_matches_one_process(tmp_path):
    no_dropout = (("seq_len = 32 }", "seq_len = 32, dropout = 0.0 }"),)  # ranks draw their own dropout masks
    launched = write_tiny_recipe(tmp_path / "torchrun", steps=20, edits=no_dropout)
    alone = write_tiny_recipe(tmp_path / "alone", steps=20, edits=no_dropout)
    api.run(api.load(alone))

    first = torchrun(launched, 2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "processes         │ 2" in first.stderr  # the plan counts the launch's processes
    assert first.stderr.count("pretrain: done") == 1  # rank 0 speaks; rank 1 trains silently
    # Compiled outside the launch (one process), the recipe finds the same store entry: the step is the same.
    assert set(api.states(api.compile(api.load(launched))).values()) == {"cached"}
    assert_close(weights_of(launched), weights_of(alone))

    again = torchrun(launched, 2)  # everything cached: rank 1 is dismissed without training
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 cached" in again.stderr


def test_a_step_failing_under_torchrun_ends_the_launch_with_rank_0s_message_and_no_traceback(tmp_path):
    too_short = (("budget = { steps = 40 }", "budget = { epochs = 0.001 }"),)  # 1 step, not more than the warmup
    failed = torchrun(write_tiny_recipe(tmp_path, edits=too_short), 2)
    assert failed.returncode != 0
    assert failed.stderr.count("error: step 'base' failed: 0.001 epochs") == 1  # said once, by rank 0
    assert "[rank1]: Traceback" not in failed.stderr  # the other rank leaves without burying it


def test_run_nproc_that_disagrees_with_the_torchrun_launch_is_a_recipe_error(tmp_path, monkeypatch):
    recipe = write_tiny_recipe(tmp_path, edits=(('name = "tiny"', 'name = "tiny"\nnproc = 4'),))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecipeError, match="torchrun started 2 processes"):
        api.compile(api.load(recipe))


def test_steps_rank_0_runs_alone_under_torchrun_use_every_core():
    threads = torch.get_num_threads()
    seen = []
    torch.set_num_threads(1)  # what torchrun's OMP_NUM_THREADS=1 gives each rank
    try:
        on_every_core(lambda spec, ctx: seen.append(torch.get_num_threads()) or {})({}, None)
        assert seen == [core_count()] and torch.get_num_threads() == 1  # restored for the next training step
    finally:
        torch.set_num_threads(threads)
