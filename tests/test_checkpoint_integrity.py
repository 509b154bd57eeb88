"""A damaged checkpoint is passed over for the one before it, and a metrics rewrite interrupted midway keeps the
file it was replacing: the two moments at which a kill or a bad disk used to block or rewrite a step's history."""

from __future__ import annotations

import io
import json
import types

import pytest

from llmrecipe.run.reporter import LineReporter
from llmrecipe.training import metrics
from llmrecipe.training.checkpoint import latest_checkpoint
from llmrecipe.training.metrics import MetricsLog
from tests.test_training import Crash, CrashingReporter, as_bytes, make_spec, train_once


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.e2e
@pytest.mark.parametrize("damage", [truncate, flip_one_byte], ids=["truncated", "one-byte-flip"])
def test_a_damaged_latest_checkpoint_is_skipped_for_the_previous_one_with_a_warning(tmp_path, damage):
    spec = make_spec()  # checkpoints every 5 steps, the last two kept
    reference, _ = train_once(tmp_path, "straight", spec)
    with pytest.raises(Crash):
        train_once(tmp_path, "damaged", spec, CrashingReporter(after=13))
    checkpoints = tmp_path / "damaged" / "scratch" / "checkpoints"
    assert [p.name for p in sorted(checkpoints.glob("step-*"))] == ["step-00000005", "step-00000010"]
    damage(checkpoints / "step-00000010" / "model.safetensors")
    assert latest_checkpoint(checkpoints).name == "step-00000005"

    said = io.StringIO()
    resumed, _ = train_once(tmp_path, "damaged", spec, LineReporter(out=said))
    assert "checkpoint step-00000010 is damaged (model.safetensors" in said.getvalue()
    assert "resumed from checkpoint at step 5" in said.getvalue()
    assert as_bytes(resumed) == as_bytes(reference)  # the earlier checkpoint leads to the same weights


def test_a_metrics_rewrite_killed_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, resume_step=0, event=lambda record: None)
    for step in range(1, 7):
        log.write({"step": step, "loss": 1.0 / step})
    before = path.read_text()

    calls = {"n": 0}

    def dumps_then_die(record, *args, **kwargs):  # the kill lands after the third line of the rewrite
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return json.dumps(record, *args, **kwargs)

    monkeypatch.setattr(metrics, "json", types.SimpleNamespace(dumps=dumps_then_die, loads=json.loads))
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(path, resume_step=5, event=lambda record: None)  # a resume rewrites the file to step 5
    assert path.read_text() == before
    monkeypatch.undo()
    MetricsLog(path, resume_step=5, event=lambda record: None)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
