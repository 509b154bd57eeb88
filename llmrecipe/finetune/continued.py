"""Task `continue`: more next-token training of a trained model on a domain corpus (domain adaptation).

The pre-training loop (llmrecipe/training/loop.py) does the work on the tokens of the recipe's `data` step,
starting from the init model's weights, usually with a lower learning rate and optionally with LoRA.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmrecipe.errors import StepError
from llmrecipe.finetune.model_io import adapt, copy_tokenizer, starting_model, write_model
from llmrecipe.plan.specs import FinetuneSpec, PretrainSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.batches import TokenFile
from llmrecipe.training.loop import TrainData, train
from llmrecipe.training.metrics import write_training_outputs


def run_continue(spec: FinetuneSpec, ctx: StepContext) -> dict[str, Any]:
    data = token_data(spec, ctx)
    loop_spec = pretrain_view(spec, len(data.train))
    model = starting_model(spec, ctx.inputs["model"], [], 0)
    trained = adapt(model, spec, [])
    ctx.log(f"training {trained:,} of {sum(p.numel() for p in model.parameters()):,} parameters")
    summary = train(loop_spec, model, data, ctx)
    records = summary.pop("metrics_records")
    out = ctx.out_dir
    write_model(model, spec, out, ctx.scratch_dir / "best" / "model.safetensors")
    copy_tokenizer(ctx.inputs["tokenizer"], out)
    copy_tokenizer(ctx.inputs["model"], out)  # an init model tuned for chat keeps its template
    write_training_outputs(records, ctx.scratch_dir, out, f"{ctx.name}: continued pre-training, {summary['steps']} steps")
    return {**summary, "trained_parameters": trained}


def pretrain_view(spec: FinetuneSpec, train_tokens: int) -> PretrainSpec:
    """The finetune spec in the pre-training loop's terms; windows are `spec.seq_len` tokens long."""
    total = spec.total_steps or max(1, math.ceil(spec.epochs * train_tokens / spec.tokens_per_step))
    if spec.optim.warmup >= total:
        raise StepError(f"the budget gives {total} steps, not more than optim.warmup = {spec.optim.warmup}; lower the "
                        "warmup or raise the budget")
    return PretrainSpec(
        model=spec.model.model_copy(update={"seq_len": spec.seq_len}), optim=spec.optim, batch_size=spec.batch_size,
        micro_batch_size=spec.micro_batch_size, grad_accum=spec.grad_accum, tokens_per_step=spec.tokens_per_step,
        total_steps=total, epochs=spec.epochs, eval_every=spec.eval_every, eval_batches=spec.eval_batches,
        early_stopping_patience=spec.early_stopping_patience, checkpoint_every=spec.checkpoint_every,
        log_every=spec.log_every, tensorboard=spec.tensorboard, device=spec.device, precision=spec.precision,
        compile=spec.compile, seed=spec.seed,
    )


def token_data(spec: FinetuneSpec, ctx: StepContext) -> TrainData:
    tokens = ctx.inputs["tokens"]
    meta = json.loads((tokens / "meta.json").read_text())
    window = spec.seq_len + 1
    train_file = TokenFile(tokens / "train.bin", meta["dtype"])
    if len(train_file) <= window:
        raise StepError(f"the data step's train split has {len(train_file)} tokens, fewer than one window of "
                        f"seq_len + 1 = {window}; add data or lower max_seq_len")
    val = TokenFile(tokens / "val.bin", meta["dtype"])
    if len(val) <= window:
        ctx.log(f"validation split has {len(val)} tokens, less than one window: validation loss is skipped")
        return TrainData(train=train_file, val=None)
    return TrainData(train=train_file, val=val)
