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


@pytest.mark.e2e
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


def test_every_training_step_hands_every_control_to_the_trainer(tmp_path):
    from dataclasses import fields

    from llmrecipe.models.registry import family
    from llmrecipe.plan.specs import FinetuneSpec, PretrainSpec
    from llmrecipe.steps.training import train_config
    from llmrecipe.training.config import TrainConfig

    extra = ('\n[steps.domain]\nkind = "finetune"\ninit = "base"\ntask = "continue"\ndata = "corpus"\n'
             'budget = { steps = 5 }\noptim = { warmup = 1 }\nbatch_size = 2\ntensorboard = true\n')
    plan = api.compile(api.load(write_tiny_recipe(tmp_path, steps=20, extra=extra)))
    derived = {"fsdp_unit", "flops_per_token", "score_start"}  # from the family and the executor, not the spec
    for name, kind in (("base", PretrainSpec), ("domain", FinetuneSpec)):
        spec = kind.model_validate(plan.step(name).spec)
        config = train_config(spec, family(spec.model.arch))
        carried = {f.name for f in fields(TrainConfig)} - derived
        assert carried <= set(kind.model_fields), carried - set(kind.model_fields)
        assert {f: getattr(config, f) for f in carried} == {f: getattr(spec, f) for f in carried}
    assert train_config(FinetuneSpec.model_validate(plan.step("domain").spec), family("llama")).tensorboard


@pytest.mark.parametrize("resumed_at", [0, 2])
def test_events_past_the_resumed_or_rolled_back_step_are_dropped_like_the_jsonl_lines(tmp_path, resumed_at):
    from llmrecipe.training.metrics import MetricsLog

    def losses(log: MetricsLog) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in log.records]

    first = MetricsLog(tmp_path / "metrics.jsonl", 0, lambda record: None, tensorboard=True)
    for step in range(1, 5):
        first.write({"step": step, "loss": float(step)})
    # A kill, then a resume from the checkpoint at `resumed_at` (0: none was written), which goes on to step 4.
    resumed = MetricsLog(tmp_path / "metrics.jsonl", resumed_at, lambda record: None, tensorboard=True)
    for step in range(resumed_at + 1, 5):
        resumed.write({"step": step, "loss": 10.0 * step})
    assert scalars(tmp_path / "tensorboard", "loss") == losses(resumed)
    # A rollback to step 3, then steps 4 and 5 again.
    resumed.truncate(3)
    for step in (4, 5):
        resumed.write({"step": step, "loss": 100.0 * step})
    assert scalars(tmp_path / "tensorboard", "loss") == losses(resumed)
