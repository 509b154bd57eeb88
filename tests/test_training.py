"""The trainer on windows of a token file: exact resume from a checkpoint, schedule shape, non-finite policies,
early stopping and the final score of the best weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrecipe.models.build import build_model
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.recipe.pretrain import OptimConfig
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineProgress, LineReporter
from llmrecipe.steps.training import train_config
from llmrecipe.training.checkpoint import latest_checkpoint, model_tensors
from llmrecipe.training.distributed import World
from llmrecipe.training.schedule import learning_rate
from llmrecipe.training.tasks.windows import TokenFile, WindowTask, tiled_offsets
from llmrecipe.training.trainer import Trainer

SHAPE = ModelShape(arch="llama", n_layer=2, n_head=2, n_kv_head=1, d_model=32, head_dim=16, ffn_hidden=64,
                   vocab_size=64, seq_len=16, dropout=0.1, rope_theta=10000.0, tie_embeddings=True)


def make_spec(**changes) -> PretrainSpec:
    values = dict(model=SHAPE, optim=OptimConfig(lr=3e-3, warmup=3), batch_size=4, micro_batch_size=2, grad_accum=2,
                  tokens_per_step=64, total_steps=24, eval_every=8, eval_batches=2, checkpoint_every=5, log_every=4,
                  device="cpu", precision="fp32", compile=False, seed=3)
    values.update(changes)
    return PretrainSpec(**values)


def token_files(folder: Path) -> tuple[TokenFile, TokenFile]:
    rng = np.random.default_rng(0)
    for split, n in (("train", 4000), ("val", 600)):
        # A learnable stream: mostly counting upward mod 64, with some noise.
        ids = (np.arange(n) + (rng.random(n) < 0.1) * rng.integers(0, 64, n)) % 64
        ids.astype("<u2").tofile(folder / f"{split}.bin")
    return TokenFile(folder / "train.bin", "uint16"), TokenFile(folder / "val.bin", "uint16")


def trainer(spec: PretrainSpec, model: torch.nn.Module, folder: Path, ctx, world: World = World()) -> Trainer:
    """The trainer of a pretrain step, on the token files in `folder` (written by token_files)."""
    train, val = TokenFile(folder / "train.bin", "uint16"), TokenFile(folder / "val.bin", "uint16")
    arch = family(spec.model.arch)
    task = WindowTask(spec.model, train, val, spec.seed, spec.batch_size, spec.eval_batches, spec.final_eval_batches,
                      masked=arch.objective == "masked_lm")
    return Trainer(model, task, train_config(spec, arch), ctx, world)


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


def context(tmp_path: Path, name: str, reporter=None) -> StepContext:
    ctx = StepContext(name=name, inputs={}, out_dir=tmp_path / name / "out", scratch_dir=tmp_path / name / "scratch",
                      device="cpu", reporter=reporter or LineReporter())
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    return ctx


def train_once(tmp_path: Path, name: str, spec: PretrainSpec, reporter=None, model=None) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(spec.seed)
    model = model if model is not None else build_model(spec.model)
    token_files(tmp_path)
    return model, trainer(spec, model, tmp_path, context(tmp_path, name, reporter)).fit()


def as_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.numpy().tobytes() for k, v in model_tensors(model).items()}


@pytest.mark.e2e
def test_training_learns(tmp_path):
    _, summary = train_once(tmp_path, "learn", make_spec(total_steps=60, optim=OptimConfig(lr=1e-2, warmup=5)))
    assert summary["best_val_loss"] < math.log(64) - 1.0  # well below uniform guessing


@pytest.mark.e2e
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
    """Metrics records minus wall-clock throughput and memory, which differ run to run."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu", "memory_bytes")} for r in records]


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


@pytest.mark.parametrize("schedule", ["linear", "wsd", "constant"])
def test_every_schedule_warms_up_and_ends_at_its_floor(schedule):
    optim = OptimConfig(lr=1.0, warmup=10, min_lr_ratio=0.1, schedule=schedule, decay_fraction=0.25)
    lrs = [learning_rate(optim, step, 110) for step in range(110)]
    assert lrs[9] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))  # never rises after warmup
    assert lrs[-1] == pytest.approx(1.0 if schedule == "constant" else 0.1)
    if schedule == "wsd":  # stable at the peak until the last quarter, then a straight line down
        assert lrs[81] == 1.0 and lrs[82] < 1.0


@pytest.mark.e2e
def test_sgd_and_activation_checkpointing_train(tmp_path):
    sgd = make_spec(total_steps=40, optim=OptimConfig(name="sgd", lr=0.3, warmup=5, weight_decay=0.0))
    _, summary = train_once(tmp_path, "sgd", sgd)
    assert summary["best_val_loss"] < math.log(64) - 0.5
    plain = make_spec(total_steps=6, model=SHAPE.model_copy(update={"dropout": 0.0}))
    checkpointed = plain.model_copy(update={"activation_checkpointing": True})
    a, _ = train_once(tmp_path, "plain", plain)
    b, _ = train_once(tmp_path, "checkpointed", checkpointed)
    for (name, x), y in zip(model_tensors(a).items(), model_tensors(b).values()):
        assert torch.allclose(x, y, atol=1e-6), name  # recomputation gives the same gradients


def test_early_stopping_keeps_the_best_weights(tmp_path):
    # A learning rate this high makes the validation loss bounce, so patience 1 stops the run early.
    spec = make_spec(total_steps=200, eval_every=2, early_stopping_patience=1, optim=OptimConfig(lr=0.3, warmup=1))
    model, summary = train_once(tmp_path, "early", spec)
    assert summary["stopped_early"] and summary["steps"] < 200
    vals = [r["val_loss"] for r in summary["metrics_records"] if "val_loss" in r]
    assert summary["best_val_loss"] == min(vals) and vals[-1] > min(vals)
    assert (tmp_path / "early" / "scratch" / "best" / "model.safetensors").is_file()


@pytest.mark.e2e
def test_final_evaluation_scores_the_best_weights_on_other_windows(tmp_path):
    spec = make_spec(total_steps=200, eval_every=2, early_stopping_patience=1, final_eval_batches=5,
                     optim=OptimConfig(lr=0.3, warmup=1))
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    token_files(tmp_path)
    final_run = trainer(spec, model, tmp_path, context(tmp_path, "final"))
    summary = final_run.fit()
    vals = {r["step"]: r["val_loss"] for r in summary["metrics_records"] if "val_loss" in r}
    assert vals[summary["best_step"]] == summary["best_val_loss"] == min(vals.values())
    final = final_run.score_best()
    periodic = final_run.evaluate(final_run.runner, final_run.task.validation_batches())["val_loss"]
    assert periodic == summary["best_val_loss"]  # the best weights are back in the model
    assert final != periodic and abs(final - periodic) < 0.5  # other windows, the same weights
    without = trainer(spec.model_copy(update={"final_eval_batches": None}), model, tmp_path, context(tmp_path, "final"))
    assert without.score_best() is None


def test_tiled_windows_cover_the_split_once_or_spread_over_it():
    whole = tiled_offsets(1000, n_tokens=600, seq_len=16)
    assert whole.tolist() == list(range(0, 584, 16))  # every target position predicted exactly once
    spread = tiled_offsets(5, n_tokens=600, seq_len=16)
    assert spread.tolist() == [0, 144, 288, 432, 576] and set(spread.tolist()) <= set(whole.tolist())


class NaNAt(torch.nn.Module):
    """A model whose training forward pass number `bad_call` returns NaN logits, like one bad batch."""

    def __init__(self, model, bad_call: int):
        super().__init__()
        self.inner, self.bad_call, self.calls = model, bad_call, 0
        self.shape = model.shape

    def forward(self, idx):
        logits = self.inner(idx)
        if self.training:
            self.calls += 1
            if self.calls == self.bad_call:
                return logits * float("nan")
        return logits


@pytest.mark.parametrize("policy", ["stop", "skip", "rollback"])
def test_non_finite_loss_is_handled_by_policy(tmp_path, policy):
    from llmrecipe.errors import StepError

    spec = make_spec(total_steps=12, on_nonfinite=policy, micro_batch_size=4, grad_accum=1)
    torch.manual_seed(spec.seed)
    model = NaNAt(build_model(spec.model), bad_call=8)  # step 7 (0-based) gives NaN once
    if policy == "stop":
        with pytest.raises(StepError, match="loss became nan at step 7"):
            train_once(tmp_path, policy, spec, model=model)
        return
    _, summary = train_once(tmp_path, policy, spec, model=model)
    assert summary["steps"] == 12 and summary["skipped_steps"] == [7]
    assert all(math.isfinite(p.sum().item()) for p in model.parameters())
    if policy == "rollback":  # restarted from the step-5 checkpoint, then trained through without step 7
        assert model.calls == 8 + (12 - 5 - 1)


def test_auto_precision_keeps_tiny_models_in_fp32_on_a_cpu():
    from llmrecipe.plan.derive import CPU_BF16_MIN_WIDTH, _precision
    from llmrecipe.plan.plan import Host

    amx = Host(cuda=False, cpu_bf16=True)
    assert _precision("auto", "cpu", amx, d_model=128) == "fp32"  # casts cost more than bf16 matmuls save
    assert _precision("auto", "cpu", amx, d_model=CPU_BF16_MIN_WIDTH) == "bf16"
    assert _precision("auto", "cpu", Host(cuda=False, cpu_bf16=False), d_model=512) == "fp32"
    assert _precision("auto", "cuda", amx, d_model=64) == "bf16"
    assert _precision("bf16", "cpu", amx, d_model=64) == "bf16"  # an explicit choice stands
