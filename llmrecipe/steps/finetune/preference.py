"""Task `preference`: learn from pairs of a chosen and a rejected answer to one prompt (DPO, IPO or SimPO).

Order of work, as for `sft`: the tokenizer gains the template's special tokens, every row is checked, made a pair,
fitted and encoded (a bad row fails here, before any compute), the starting model is built (LoRA applied). For DPO
and IPO the starting model's log-probabilities of every answer are then computed once (with LoRA: the same model
with its adapters off) and kept in the step's scratch folder, so a resumed run reads them back instead of computing
them from weights that have since moved; training never holds a second model. The output is a chat model like
`sft`'s: `llmrecipe generate --chat`, evaluate, serve and export use it as they use any fine-tuned model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmrecipe.finetune.preference_data import load_pairs
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.finetune.model_io import adapt, starting_model, train_and_write
from llmrecipe.steps.finetune.sft import add_special_tokens, require_targets, write_chat_tokenizer
from llmrecipe.tokenizer.bytes import load_tokenizer
from llmrecipe.training.distributed import World, barrier
from llmrecipe.training.tasks.preference import PairRows, PreferenceTask, reference_log_probs
from llmrecipe.training.tasks.preference_loss import USES_REFERENCE
from llmrecipe.training.trainer import autocast

REFERENCE_FILE = "reference_log_probs.safetensors"
"""In the step's scratch folder: the starting model's log-probabilities of each split's answers, (pairs, 2)."""


def run_preference(spec: FinetuneSpec, ctx: StepContext, world: World) -> dict[str, Any]:
    tokenizer, meta = load_tokenizer(ctx.inputs["tokenizer"])
    known = tokenizer.get_vocab_size(with_added_tokens=True)
    new_ids = add_special_tokens(tokenizer, spec.special_tokens, spec.model.vocab_size)
    pairs, counts = load_pairs(Path(spec.dataset_file), spec.dataset, tokenizer, spec.chat_template, spec.end_of_turn,
                               spec.seq_len + 1, spec.truncation, f"steps.{ctx.name}.dataset")  # +1: next token
    ctx.log(counts.sentence())
    require_targets(counts.splits["train"], spec)
    train, val = PairRows(pairs["train"]), PairRows(pairs["val"])
    model = starting_model(spec, ctx.inputs["model"], new_ids, known)
    trained = adapt(model, spec, new_ids)
    ctx.log(f"training {trained:,} of {sum(p.numel() for p in model.parameters()):,} parameters")
    objective = spec.preference
    if USES_REFERENCE[objective.method]:
        saved = reference(model, {"train": train, "val": val}, spec, ctx, world)
        train.reference, val.reference = saved["train"], saved["val"]
    if not len(val):
        ctx.log("no held-out pairs, so no validation and no reward metrics: raise dataset.val_fraction above 0 or "
                "mark rows \"split\": \"validation\"")
    task = PreferenceTask(train, val if len(val) else None, objective.method, objective.beta, objective.gamma,
                          spec.seed, spec.batch_size, spec.eval_batches, spec.micro_batch_size)
    summary = train_and_write(model, task, spec, ctx, world, f"preference ({objective.method})")
    if world.is_main:
        write_chat_tokenizer(tokenizer, meta, spec, ctx.out_dir)
    return {**summary, **counts.as_metrics(), "trained_parameters": trained}


def reference(model: nn.Module, splits: dict[str, PairRows], spec: FinetuneSpec, ctx: StepContext,
              world: World) -> dict[str, torch.Tensor]:
    """Each split's reference log-probabilities: read from the scratch folder when an earlier attempt of this step
    computed them, else computed by the main process and saved there (atomically) for every process to read."""
    path = ctx.scratch_dir / REFERENCE_FILE
    if world.is_main and not saved_for(path, splits):
        model.to(spec.device)
        ctx.log(f"computing the reference log-probabilities of {sum(len(rows) for rows in splits.values())} pairs")
        computed = {name: reference_log_probs(model, rows, spec.micro_batch_size, spec.device,
                                              autocast(spec.device, spec.precision))
                    for name, rows in splits.items()}
        partial = path.with_name(path.name + ".partial")
        save_file(computed, str(partial))
        os.replace(partial, path)
    barrier(world)
    saved = load_file(str(path))
    return {name: saved[name] for name in splits}


def saved_for(path: Path, splits: dict[str, PairRows]) -> bool:
    """Whether `path` holds reference log-probabilities of exactly these splits' pairs."""
    if not path.is_file():
        return False
    saved = load_file(str(path))
    return all(name in saved and tuple(saved[name].shape) == (len(rows), 2) for name, rows in splits.items())
