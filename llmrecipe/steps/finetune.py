"""Executor of `finetune`: a trained model adapted by SFT, classification or continued pre-training, maybe with LoRA.

Outputs: model.safetensors + config.json, tokenizer.json + meta.json (with chat_template.jinja and
tokenizer_config.json for `sft`), metrics.jsonl, loss.png, best/ when validation ran, and adapter.safetensors +
adapter_config.json for LoRA runs. Tasks `sft` and `continue` live in llmrecipe/finetune/; `classify` in
llmrecipe/finetune/classify.py.
"""

from __future__ import annotations

from typing import Any

from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.training.device import prepare_device
from llmrecipe.training.distributed import World


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = FinetuneSpec.model_validate(raw_spec)
    prepare_device(spec.device)
    if spec.task == "classify":
        from llmrecipe.finetune.classify import run_classify

        return run_classify(spec, ctx, World())
    if spec.task == "sft":
        from llmrecipe.finetune.sft import run_sft

        return run_sft(spec, ctx)
    from llmrecipe.finetune.continued import run_continue

    return run_continue(spec, ctx)
