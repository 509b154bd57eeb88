"""The trainer's precision and compile modes through the whole loop, on a tiny model: bf16 autocast, and
torch.compile (its loss inside the compiled graph), each resuming byte-identically after a crash."""

from __future__ import annotations

import math

import pytest

from llmrecipe.training.device import prepare_device
from tests.test_training import SHAPE, Crash, CrashingReporter, as_bytes, make_spec, train_once, without_speed


def crash_and_resume(tmp_path, spec, crash_after: int):
    reference, summary = train_once(tmp_path, "straight", spec)
    with pytest.raises(Crash):
        train_once(tmp_path, "crashy", spec, CrashingReporter(after=crash_after))
    resumed, again = train_once(tmp_path, "crashy", spec)
    assert as_bytes(resumed) == as_bytes(reference)
    assert without_speed(again["metrics_records"]) == without_speed(summary["metrics_records"])
    return summary


def test_bf16_autocast_trains_and_resumes_byte_identically(tmp_path):
    spec = make_spec(precision="bf16", total_steps=24, optim=make_spec().optim.model_copy(update={"lr": 1e-2}))
    summary = crash_and_resume(tmp_path, spec, crash_after=13)
    assert summary["best_val_loss"] < math.log(64) - 1.0


@pytest.mark.slow  # a cold compile of the training and the validation graphs: ~30-50 s on 2 cores
def test_compiled_training_follows_eager_and_resumes_byte_identically(tmp_path):
    prepare_device("cpu")  # deterministic algorithms: compiled CPU kernels are then bitwise reproducible
    still = SHAPE.model_copy(update={"dropout": 0.0})
    compiled = make_spec(total_steps=8, compile=True, model=still, eval_every=4, checkpoint_every=4, log_every=1)
    summary = crash_and_resume(tmp_path, compiled, crash_after=6)
    _, eager = train_once(tmp_path, "eager", compiled.model_copy(update={"compile": False}))
    losses = [r["loss"] for r in summary["metrics_records"] if "loss" in r]
    eager_losses = [r["loss"] for r in eager["metrics_records"] if "loss" in r]
    assert losses == pytest.approx(eager_losses, rel=1e-4)  # the same arithmetic, fused in another order
