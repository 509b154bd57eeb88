"""Executor of `pretrain`: a model trained from scratch on the packed tokens of the train split, by the family's
objective (next tokens for decoders, masked tokens for encoders).

With `nproc` > 1 it starts that many processes (torch.distributed, gloo on CPU, NCCL on GPU); under torchrun rank 0
runs it in the launch's group while the other ranks run `train_and_save` (llmrecipe/steps/processes.py). Outputs:
model.safetensors + config.json (the last weights), best/ (the weights with the best validation loss),
metrics.jsonl and loss.png.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import AddedToken, Tokenizer

from llmrecipe.errors import StepError
from llmrecipe.models.build import build_model
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.models.t5 import sentinel_token, span_corruption_lengths
from llmrecipe.plan.specs import PretrainSpec, TrainingSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.processes import train_in_group
from llmrecipe.steps.training import train_config
from llmrecipe.training.checkpoint import save_weights
from llmrecipe.training.device import prepare_device
from llmrecipe.training.distributed import World
from llmrecipe.training.metrics import write_training_outputs
from llmrecipe.training.task import Task
from llmrecipe.training.tasks.span_corruption import SpanCorruptionTask
from llmrecipe.training.tasks.windows import TokenFile, WindowTask
from llmrecipe.training.trainer import Trainer


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = PretrainSpec.model_validate(raw_spec)
    train_in_group(train_and_save, raw_spec, ctx, spec.nproc, spec.device)
    return json.loads((ctx.scratch_dir / "summary.json").read_text())


def train_and_save(raw_spec: dict[str, Any], ctx: StepContext, world: World) -> None:
    """Train in this process (one of `world`); the main process writes the outputs and the summary."""
    spec = PretrainSpec.model_validate(raw_spec)
    prepare_device(spec.device)
    arch = family(spec.model.arch)
    tokenizer = with_added_tokens(ctx.inputs["tokenizer"] / "tokenizer.json", arch.added_tokens(spec.model))
    task = PRETRAIN_TASKS[arch.objective](spec.model, spec, ctx, tokenizer)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    trainer = Trainer(model, task, train_config(spec, arch), ctx, world)
    summary = trainer.fit()
    records = summary.pop("metrics_records")
    save_weights(model, ctx.out_dir / "model.safetensors", world)  # collective under FSDP
    if (final := trainer.score_best()) is not None:  # after the last weights are saved
        summary["selection_val_loss"], summary["best_val_loss"] = summary["best_val_loss"], final
    if not world.is_main:
        return
    config = spec.model.model_dump_json(indent=2)
    (ctx.out_dir / "config.json").write_text(config)
    if (ctx.scratch_dir / "best" / "model.safetensors").is_file():
        (ctx.out_dir / "best").mkdir(exist_ok=True)
        shutil.copy(ctx.scratch_dir / "best" / "model.safetensors", ctx.out_dir / "best" / "model.safetensors")
        (ctx.out_dir / "best" / "config.json").write_text(config)
    if arch.added_tokens(spec.model):
        tokenizer.save(str(ctx.out_dir / "tokenizer.json"))
    else:  # the tokenizer step's file, byte for byte
        shutil.copy(ctx.inputs["tokenizer"] / "tokenizer.json", ctx.out_dir / "tokenizer.json")
    write_training_outputs(records, ctx.scratch_dir, ctx.out_dir, f"{ctx.name}: {spec.model.arch}, {summary['steps']} steps")
    (ctx.scratch_dir / "summary.json").write_text(json.dumps(summary))


def with_added_tokens(path: Path, added: list[str]) -> Tokenizer:
    """The tokenizer step's tokenizer with the family's special tokens appended (T5's sentinels), in order."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in added])
    return tokenizer


def span_corruption_task(shape: ModelShape, spec: TrainingSpec, ctx: StepContext,
                         tokenizer: Tokenizer) -> SpanCorruptionTask:
    """Span corruption on the step's tokenized splits; the sentinels are the tokenizer's top ids."""
    train, val, meta = token_splits(shape, ctx, span_corruption_lengths(shape.seq_len, shape.noise_density,
                                                                        shape.mean_span_length)[0])
    return SpanCorruptionTask(shape, train, val, spec.seed, spec.batch_size, spec.eval_batches,
                              tokenizer.token_to_id(sentinel_token(0)), meta["eot_id"])


def window_task(shape: ModelShape, spec: TrainingSpec, ctx: StepContext, masked: bool = False) -> WindowTask:
    """Windows of `shape.seq_len` tokens of the step's tokenized train and validation splits."""
    train, val, _ = token_splits(shape, ctx, shape.seq_len + 1)
    return WindowTask(shape, train, val, spec.seed, spec.batch_size, spec.eval_batches,
                      getattr(spec, "final_eval_batches", None), masked)


PRETRAIN_TASKS: dict[str, Callable[[ModelShape, TrainingSpec, StepContext, Tokenizer], Task]] = {
    "causal_lm": lambda shape, spec, ctx, tokenizer: window_task(shape, spec, ctx),
    "masked_lm": lambda shape, spec, ctx, tokenizer: window_task(shape, spec, ctx, masked=True),
    "span_corruption": span_corruption_task,
}
"""The pre-training task of each family objective."""


def token_splits(shape: ModelShape, ctx: StepContext, window: int) -> tuple[TokenFile, TokenFile | None, dict]:
    """The tokenized train and validation splits (validation None when shorter than one `window`), and their meta."""
    tokens = ctx.inputs["tokens"]
    meta = json.loads((tokens / "meta.json").read_text())
    if meta["vocab_size"] > shape.vocab_size:
        raise StepError(
            f"the tokenizer has {meta['vocab_size']} tokens but the model only {shape.vocab_size} rows; "
            "the tokenizer step must not exceed its vocab_size"
        )
    train = TokenFile(tokens / "train.bin", meta["dtype"])
    if len(train) <= window:
        raise StepError(
            f"the train split has {len(train)} tokens, fewer than one training example of {window}; "
            "add data or lower the sequence length (model.seq_len, or max_seq_len of a finetune step)"
        )
    val = TokenFile(tokens / "val.bin", meta["dtype"])
    if len(val) <= window:
        ctx.log(f"validation split has {len(val)} tokens, less than one window: validation loss is skipped")
        val = None
    return train, val, meta
