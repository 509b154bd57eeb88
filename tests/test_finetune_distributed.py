"""Fine-tuning in a process group: SFT, classify and continue trained by two processes follow one process (DDP and
FSDP2), and a two-process fine-tune killed midway resumes to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmrecipe import api
from tests.conftest import write_tiny_recipe
from tests.test_classify import labelled_rows, write_jsonl
from tests.test_finetune import write_pairs

pytestmark = pytest.mark.e2e

FINETUNES = """
[steps.chat]
kind = "finetune"
init = "base"
task = "sft"
dataset = {{ path = "pairs.jsonl" }}
optim = {{ lr = 3e-3, warmup = 2 }}
batch_size = 4
budget = {{ steps = 8 }}
eval_every = 4
log_every = 1
checkpoint_every = 3
precision = "fp32"
sharding = "{sharding}"

[steps.labels]
kind = "finetune"
init = "base"
task = "classify"
dataset = {{ path = "labelled.jsonl" }}
optim = {{ lr = 3e-3, warmup = 2 }}
batch_size = 4
budget = {{ steps = 8 }}
eval_every = 4
log_every = 1
precision = "fp32"
sharding = "{sharding}"

[steps.domain]
kind = "finetune"
init = "base"
task = "continue"
data = "corpus"
optim = {{ lr = 3e-3, warmup = 2 }}
batch_size = 4
budget = {{ steps = 8 }}
eval_every = 4
log_every = 1
precision = "fp32"
sharding = "{sharding}"
"""
STEPS = ("chat", "labels", "domain")


def recipe(folder: Path, nproc: int, sharding: str = "ddp") -> Path:
    path = write_tiny_recipe(folder, steps=20, extra=FINETUNES.format(sharding=sharding),
                             edits=(('name = "tiny"', f'name = "tiny"\nnproc = {nproc}'),))
    write_pairs(folder)
    write_jsonl(folder / "labelled.jsonl", labelled_rows(48))
    return path


def outputs(path: Path, step: str) -> tuple[dict, list[float]]:
    plan = api.compile(api.load(path))
    folder = Path(plan.workdir) / "store" / plan.step(step).fingerprint
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return load_file(folder / "model.safetensors"), [r["loss"] for r in records if "loss" in r]


@pytest.mark.parametrize("sharding", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_fine_tune_what_one_does(tmp_path, sharding):
    one, two = recipe(tmp_path / "one", 1, sharding), recipe(tmp_path / "two", 2, sharding)
    api.run(api.load(one))
    api.run(api.load(two))
    for step in STEPS:
        (weights_one, losses_one), (weights_two, losses_two) = outputs(one, step), outputs(two, step)
        assert len(losses_one) == 8 and losses_two == pytest.approx(losses_one, rel=1e-4, abs=1e-6), step
        for name, tensor in weights_one.items():
            # Adam divides by the root of tiny second moments: float-order noise of ~1e-5 shows in the weights.
            assert torch.allclose(weights_two[name], tensor, rtol=1e-4, atol=1e-4), (step, name)


def run_cli(path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmrecipe", "run", str(path)], cwd=path.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_a_two_process_fine_tune_killed_midway_resumes_to_the_same_bytes(tmp_path):
    straight, killed = recipe(tmp_path / "straight", 2), recipe(tmp_path / "killed", 2)
    api.run(api.load(straight))
    process = run_cli(killed)
    chat = api.compile(api.load(killed)).step("chat").fingerprint
    checkpoints = tmp_path / "killed" / "work" / "scratch" / chat / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("step-*/state.json")):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the spawned training processes with it
    process.wait()
    resumed = run_cli(killed)
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output
    assert "resumed from checkpoint" in output
    for step in STEPS:
        (a, losses_a), (b, losses_b) = outputs(straight, step), outputs(killed, step)
        assert losses_a == losses_b, step
        assert {k: v.numpy().tobytes() for k, v in a.items()} == {k: v.numpy().tobytes() for k, v in b.items()}, step
