"""The training loop: exact resume from a checkpoint, schedule shape, checkpoint round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrecipe.models import build_model
from llmrecipe.plan.specs import ModelShape, PretrainSpec
from llmrecipe.recipe.pretrain import OptimConfig
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter, LineProgress
from llmrecipe.training.batches import TokenFile
from llmrecipe.training.checkpoint import latest_checkpoint, model_tensors
from llmrecipe.training.loop import TrainData, train
from llmrecipe.training.schedule import learning_rate

SHAPE = ModelShape(arch="llama", n_layer=2, n_head=2, n_kv_head=1, d_model=32, head_dim=16, ffn_hidden=64,
                   vocab_size=64, seq_len=16, dropout=0.1, rope_theta=10000.0, tie_embeddings=True)


def make_spec(**changes) -> PretrainSpec:
    values = dict(model=SHAPE, optim=OptimConfig(lr=3e-3, warmup=3), batch_size=4, micro_batch_size=2, grad_accum=2,
                  tokens_per_step=64, total_steps=24, eval_every=8, eval_batches=2, checkpoint_every=5, log_every=4,
                  device="cpu", precision="fp32", compile=False, seed=3)
    values.update(changes)
    return PretrainSpec(**values)


def token_files(folder: Path) -> TrainData:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4000), ("val", 600)):
        # A learnable stream: mostly counting upward mod 64, with some noise.
        ids = (np.arange(n) + (rng.random(n) < 0.1) * rng.integers(0, 64, n)) % 64
        ids.astype("<u2").tofile(folder / f"{split}.bin")
    return TrainData(TokenFile(folder / "train.bin", "uint16"), TokenFile(folder / "val.bin", "uint16"))


class Crash(Exception):
    pass


class CrashingReporter(LineReporter):
    """Raises after `after` optimizer steps, like a kill between two steps."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def progress(self, name, total, unit, completed=0):
        reporter = self

        class Crashing(LineProgress):
            def advance(self, n=1, **fields):
                super().advance(n, **fields)
                if self.completed >= reporter.after:
                    raise Crash()

        return Crashing(self.out, name, total, unit, completed, interval=1e9)


def train_once(tmp_path: Path, name: str, spec: PretrainSpec, reporter=None) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    ctx = StepContext(name=name, inputs={}, out_dir=tmp_path / name / "out", scratch_dir=tmp_path / name / "scratch",
                      device="cpu", reporter=reporter or LineReporter())
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    return model, train(spec, model, token_files(tmp_path), ctx)


def as_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.numpy().tobytes() for k, v in model_tensors(model).items()}


def test_training_learns(tmp_path):
    _, summary = train_once(tmp_path, "learn", make_spec(total_steps=60, optim=OptimConfig(lr=1e-2, warmup=5)))
    assert summary["best_val_loss"] < math.log(64) - 1.0  # well below uniform guessing


def test_resumed_run_ends_byte_identical_to_an_uninterrupted_one(tmp_path):
    spec = make_spec()
    reference, ref_summary = train_once(tmp_path, "straight", spec)
    with pytest.raises(Crash):
        train_once(tmp_path, "crashy", spec, CrashingReporter(after=13))
    assert latest_checkpoint(tmp_path / "crashy" / "scratch" / "checkpoints").name == "step-00000010"
    resumed, summary = train_once(tmp_path, "crashy", spec)  # same scratch dir: picks up at step 10
    assert as_bytes(resumed) == as_bytes(reference)
    assert summary["val_loss"] == ref_summary["val_loss"]
    assert without_speed(summary["metrics_records"]) == without_speed(ref_summary["metrics_records"])


def without_speed(records: list[dict]) -> list[dict]:
    """Metrics records minus wall-clock throughput, which differs run to run."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def test_micro_batches_do_not_change_the_loss(tmp_path):
    whole = make_spec(total_steps=4, micro_batch_size=4, grad_accum=1, log_every=1, model=SHAPE.model_copy(update={"dropout": 0.0}))
    split = make_spec(total_steps=4, micro_batch_size=1, grad_accum=4, log_every=1, model=SHAPE.model_copy(update={"dropout": 0.0}))
    _, a = train_once(tmp_path, "whole", whole)
    _, b = train_once(tmp_path, "split", split)
    losses_a = [r["loss"] for r in a["metrics_records"] if "loss" in r]
    losses_b = [r["loss"] for r in b["metrics_records"] if "loss" in r]
    assert losses_a == pytest.approx(losses_b, rel=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    optim = OptimConfig(lr=1.0, warmup=10, min_lr_ratio=0.1)
    lrs = [learning_rate(optim, step, 110) for step in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)
