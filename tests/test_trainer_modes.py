"""The trainer's modes through the whole loop, on a tiny model: bf16 autocast and torch.compile (its loss inside the
compiled graph), each resuming byte-identically after a crash; and a stop request, which checkpoints first."""

from __future__ import annotations

import math
import os
import signal

import pytest

from llmrecipe import preemption
from llmrecipe.training.checkpoint import latest_checkpoint
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


@pytest.mark.e2e
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


class SignalAt(CrashingReporter):
    """Sends this process SIGTERM once `after` optimizer steps are done, as a batch scheduler would."""

    def progress(self, name, total, unit, completed=0):
        progress = super(CrashingReporter, self).progress(name, total, unit, completed)
        advance, reporter = progress.advance, self

        def signalling(n=1, **fields):
            advance(n, **fields)
            if progress.completed == reporter.after:
                os.kill(os.getpid(), signal.SIGTERM)

        progress.advance = signalling
        return progress


@pytest.mark.e2e
def test_sigterm_checkpoints_at_the_end_of_the_step_and_the_run_resumes_to_the_same_bytes(tmp_path):
    spec = make_spec(checkpoint_every=100)  # no periodic checkpoint before the signal
    reference, _ = train_once(tmp_path, "straight", spec)
    with preemption.handling(), pytest.raises(preemption.Interrupted, match=r"SIGTERM received \(checkpoint at step 8"):
        train_once(tmp_path, "stopped", spec, SignalAt(after=7))  # the signal lands during step 8's work
    assert latest_checkpoint(tmp_path / "stopped" / "scratch" / "checkpoints").name == "step-00000008"
    resumed, _ = train_once(tmp_path, "stopped", spec)
    assert as_bytes(resumed) == as_bytes(reference)
