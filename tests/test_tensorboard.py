"""`tensorboard = true`: the metrics of a training step also go to TensorBoard event files in its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrecipe import api
from tests.conftest import write_tiny_recipe

pytest.importorskip("tensorboard")


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_pretrain_with_tensorboard_writes_the_metrics_it_writes_as_jsonl(tmp_path):
    recipe = write_tiny_recipe(tmp_path, steps=20)
    loaded = api.load(recipe, ["steps.base.tensorboard=true"])
    api.run(loaded)
    folder = api.artifact(api.compile(loaded), "base")

    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert [step for step, _ in scalars(folder / "tensorboard", "loss")] == [step for step, _ in logged]
    assert [value for _, value in scalars(folder / "tensorboard", "loss")] == pytest.approx([v for _, v in logged])
    assert scalars(folder / "tensorboard", "val_loss")  # validation too


def test_tensorboard_does_not_change_what_a_step_is(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    plain, logged = api.compile(api.load(recipe)), api.compile(api.load(recipe, ["steps.base.tensorboard=true"]))
    assert plain.step("base").fingerprint == logged.step("base").fingerprint
