"""Executor of `pretrain`: a model trained from scratch on the packed tokens of the train split.

With `nproc` > 1 it starts that many processes (torch.distributed, gloo on CPU, NCCL on GPU). Under torchrun
(RANK and WORLD_SIZE set) rank 0 runs it and joins the launch's group, while the other ranks run
`train_and_save` as llmrecipe/training/torchrun.py tells them. Outputs: model.safetensors + config.json (the last
weights), best/ (the weights with the best validation loss), metrics.jsonl and loss.png.
"""

from __future__ import annotations

import json
import math
import shutil
from typing import Any

import torch

from llmrecipe.errors import StepError
from llmrecipe.host import launched_by_torchrun
from llmrecipe.models import build_model
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.batches import TokenFile
from llmrecipe.training.checkpoint import save_weights
from llmrecipe.training.device import prepare_device
from llmrecipe.training.distributed import World, init_process_group
from llmrecipe.training.launch import launch
from llmrecipe.training.loop import TrainData, score_best_weights, train
from llmrecipe.training.metrics import write_training_outputs


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = PretrainSpec.model_validate(raw_spec)
    if launched_by_torchrun():
        train_and_save(raw_spec, ctx, init_process_group(spec.device))
    elif spec.nproc > 1:
        ctx.log(f"training in {spec.nproc} processes ({spec.sharding})")
        launch(train_and_save, raw_spec, ctx, spec.nproc, spec.device)
    else:
        train_and_save(raw_spec, ctx, World())
    return json.loads((ctx.scratch_dir / "summary.json").read_text())


def train_and_save(raw_spec: dict[str, Any], ctx: StepContext, world: World) -> None:
    """Train in this process (one of `world`); the main process writes the outputs and the summary."""
    spec = PretrainSpec.model_validate(raw_spec)
    prepare_device(spec.device)
    data = _load_data(spec, ctx)
    spec = _with_total_steps(spec, len(data.train))
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    summary = train(spec, model, data, ctx, world)
    records = summary.pop("metrics_records")
    save_weights(model, ctx.out_dir / "model.safetensors", world)  # collective under FSDP
    if (final := score_best_weights(spec, model, data, ctx, world)) is not None:  # after the last weights are saved
        summary["selection_val_loss"], summary["best_val_loss"] = summary["best_val_loss"], final
    if not world.is_main:
        return
    config = spec.model.model_dump_json(indent=2)
    (ctx.out_dir / "config.json").write_text(config)
    if (ctx.scratch_dir / "best" / "model.safetensors").is_file():
        (ctx.out_dir / "best").mkdir(exist_ok=True)
        shutil.copy(ctx.scratch_dir / "best" / "model.safetensors", ctx.out_dir / "best" / "model.safetensors")
        (ctx.out_dir / "best" / "config.json").write_text(config)
    shutil.copy(ctx.inputs["tokenizer"] / "tokenizer.json", ctx.out_dir / "tokenizer.json")
    write_training_outputs(records, ctx.scratch_dir, ctx.out_dir, f"{ctx.name}: {spec.model.arch}, {summary['steps']} steps")
    (ctx.scratch_dir / "summary.json").write_text(json.dumps(summary))


def _with_total_steps(spec: PretrainSpec, train_tokens: int) -> PretrainSpec:
    """An epoch budget becomes steps here, the first moment the train split's size is known."""
    if spec.total_steps is not None:
        return spec
    total = max(1, math.ceil(spec.epochs * train_tokens / spec.tokens_per_step))
    if spec.optim.warmup >= total:
        raise StepError(
            f"{spec.epochs} epochs of {train_tokens} train tokens are {total} steps, not more than optim.warmup = "
            f"{spec.optim.warmup}; lower the warmup or raise budget.epochs"
        )
    return spec.model_copy(update={"total_steps": total})


def _load_data(spec: PretrainSpec, ctx: StepContext) -> TrainData:
    tokens = ctx.inputs["tokens"]
    meta = json.loads((tokens / "meta.json").read_text())
    if meta["vocab_size"] > spec.model.vocab_size:
        raise StepError(
            f"the tokenizer has {meta['vocab_size']} tokens but the model only {spec.model.vocab_size} rows; "
            "the tokenizer step must not exceed its vocab_size"
        )
    window = spec.model.seq_len + 1
    train = TokenFile(tokens / "train.bin", meta["dtype"])
    if len(train) <= window:
        raise StepError(
            f"the train split has {len(train)} tokens, fewer than one window of seq_len + 1 = {window}; "
            "add data or lower model.seq_len"
        )
    val = TokenFile(tokens / "val.bin", meta["dtype"])
    if len(val) <= window:
        ctx.log(f"validation split has {len(val)} tokens, less than one window: validation loss is skipped")
        return TrainData(train=train, val=None)
    return TrainData(train=train, val=val)
