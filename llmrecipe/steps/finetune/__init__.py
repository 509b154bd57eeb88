"""Executor of `finetune`: a trained model adapted by SFT, preference pairs (DPO, IPO, SimPO), classification,
text-to-text (seq2seq) or continued pre-training, maybe with LoRA, trained by the one trainer in one process, in
`nproc` processes, or in a torchrun launch's group.

Outputs: model.safetensors + config.json, tokenizer.json + meta.json (with chat_template.jinja and
tokenizer_config.json for `sft` and `preference`), metrics.jsonl, loss.png, best/ when validation ran, and adapter.safetensors +
adapter_config.json for LoRA runs.
"""

from __future__ import annotations

import json
from typing import Any

from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.processes import train_in_group
from llmrecipe.training.device import prepare_device
from llmrecipe.training.distributed import World


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = FinetuneSpec.model_validate(raw_spec)
    train_in_group(finetune_in_group, raw_spec, ctx, spec.nproc, spec.device)
    return json.loads((ctx.scratch_dir / "summary.json").read_text())


def finetune_in_group(raw_spec: dict[str, Any], ctx: StepContext, world: World) -> None:
    """One process's share of the step; the main process writes the outputs and the summary."""
    spec = FinetuneSpec.model_validate(raw_spec)
    prepare_device(spec.device)
    if spec.task == "classify":
        from llmrecipe.steps.finetune.classify import run_classify as task
    elif spec.task == "sft":
        from llmrecipe.steps.finetune.sft import run_sft as task
    elif spec.task == "preference":
        from llmrecipe.steps.finetune.preference import run_preference as task
    elif spec.task == "seq2seq":
        from llmrecipe.steps.finetune.seq2seq import run_seq2seq as task
    else:
        from llmrecipe.steps.finetune.continued import run_continue as task
    summary = task(spec, ctx, world)
    if world.is_main:
        (ctx.scratch_dir / "summary.json").write_text(json.dumps(summary))
