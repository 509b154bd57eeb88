"""Executor of `pretrain`: a model trained from scratch on the packed tokens of the train split."""

from __future__ import annotations

import json
import shutil
from typing import Any

import torch

from llmrecipe.errors import StepError
from llmrecipe.models import build_model
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.batches import TokenFile
from llmrecipe.training.checkpoint import save_weights
from llmrecipe.training.device import prepare_device
from llmrecipe.training.loop import TrainData, train


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = PretrainSpec.model_validate(raw_spec)
    prepare_device(spec.device)
    data = _load_data(spec, ctx)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    summary = train(spec, model, data, ctx)
    records = summary.pop("metrics_records")

    save_weights(model, ctx.out_dir / "model.safetensors")
    (ctx.out_dir / "config.json").write_text(spec.model.model_dump_json(indent=2))
    shutil.copy(ctx.inputs["tokenizer"] / "tokenizer.json", ctx.out_dir / "tokenizer.json")
    (ctx.out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return summary


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
