"""Task `continue`: more next-token training of a trained model on a domain corpus (domain adaptation).

The trainer's window task does the work on the tokens of the recipe's `data` step (windows of `max_seq_len`),
starting from the init model's weights, usually with a lower learning rate and optionally with LoRA.
"""

from __future__ import annotations

from typing import Any

from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.finetune.model_io import adapt, copy_tokenizer, starting_model, train_and_write
from llmrecipe.steps.pretrain import window_task
from llmrecipe.training.distributed import World


def run_continue(spec: FinetuneSpec, ctx: StepContext, world: World) -> dict[str, Any]:
    task = window_task(spec.model.model_copy(update={"seq_len": spec.seq_len}), spec, ctx)
    model = starting_model(spec, ctx.inputs["model"], [], 0)
    trained = adapt(model, spec, [])
    ctx.log(f"training {trained:,} of {sum(p.numel() for p in model.parameters()):,} parameters")
    summary = train_and_write(model, task, spec, ctx, world, "continued pre-training")
    if world.is_main:
        copy_tokenizer(ctx.inputs["tokenizer"], ctx.out_dir)
        copy_tokenizer(ctx.inputs["model"], ctx.out_dir)  # an init model tuned for chat keeps its template
    return {**summary, "trained_parameters": trained}
