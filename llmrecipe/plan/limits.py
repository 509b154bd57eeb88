"""What a plan's sizes add up to, checked before any step allocates them.

The recipe bounds each size on its own (llmrecipe/recipe/base.py); products of sizes within their bounds can still
ask for more memory than exists. Here the memory one process must hold at once is checked against the one limit
no machine passes: what a single process can address (2^47 bytes, 128 TiB, with the 48-bit virtual addresses of
x86-64 and ARM64). A plan past it cannot run anywhere, so it is refused at `validate` with the numbers and the fix,
instead of failing at its first allocation hours later or driving the machine into swap.
"""

from __future__ import annotations

from typing import Any

from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import PlanStep

ADDRESSABLE_BYTES = 2**47

FIX = {
    "pretrain": "make the model smaller (model.d_model, model.n_layer), the batch smaller (batch_size, "
                "micro_batch_size, eval_batches), or shard the model over processes (sharding = \"fsdp\", run.nproc)",
    "finetune": "lower batch_size, micro_batch_size or eval_batches, or start from a smaller model",
    "evaluate": "lower batch_size, or evaluate a smaller model",
}


def check_sizes(steps: list[PlanStep]) -> None:
    """One problem per step whose single process would need more memory than any process can address."""
    by_name = {step.name: step for step in steps}
    problems = []
    for step in steps:
        if step.kind in ("pretrain", "finetune"):
            held = training_bytes(step.spec, step.derived["n_params"], step.kind)
        elif step.kind == "evaluate":
            held = evaluation_bytes(step.spec, by_name[step.inputs["model"]])
        else:
            continue
        total = sum(held.values())
        if total > ADDRESSABLE_BYTES:
            parts = ", ".join(f"{what} {size:.3g}" for what, size in held.items())
            problems.append(
                f"steps.{step.name}: one process would hold at least {total:.3g} bytes at once ({parts}), more than "
                f"any process can address ({ADDRESSABLE_BYTES:.3g} bytes, 128 TiB); {FIX[step.kind]}"
            )
    if problems:
        raise RecipeError(problems)


def training_bytes(spec: dict[str, Any], n_params: int, kind: str) -> dict[str, int]:
    """Lower bounds of what one training process holds at once, by what holds it."""
    shape = spec["model"]
    seq_len = shape["seq_len"] if kind == "pretrain" else spec["seq_len"]
    per_param = 16 if spec["optim"]["name"] == "adamw" else 12  # fp32 weights, gradients, one or two moments
    shards = spec.get("nproc", 1) if spec.get("sharding") == "fsdp" else 1
    windows = (spec["eval_batches"] + (spec.get("final_eval_batches") or 0)) * spec["batch_size"]
    return {
        "training state": per_param * n_params // shards,
        "logits of a micro-batch": 4 * spec["micro_batch_size"] * seq_len * shape["vocab_size"],
        "validation windows": 8 * windows,
    }


def evaluation_bytes(spec: dict[str, Any], model: PlanStep) -> dict[str, int]:
    shape = model.spec["model"]
    return {"weights": 4 * model.derived["n_params"],
            "logits of a batch": 4 * spec["batch_size"] * shape["seq_len"] * shape["vocab_size"]}
