"""What a plan's sizes add up to, checked before any step allocates them.

The recipe bounds each size on its own (llmrecipe/recipe/base.py); products of sizes within their bounds can still
ask for more memory than exists. Two checks, both at `validate`, with the numbers and the fix, instead of failing at
the first allocation hours later or driving the machine into swap:
- what one process must hold at once, against what any process can address (2^47 bytes, 128 TiB, with the 48-bit
  virtual addresses of x86-64 and ARM64): a plan past it cannot run anywhere;
- a training step's estimated memory (weights, gradients, optimizer moments, activations and logits of one
  micro-batch) against this machine's device: refused when it cannot fit, a warning when it is close. The estimate
  is a floor (allocator slack, kernels' workspaces and fragmentation come on top), so a refusal is certain.
"""

from __future__ import annotations

from typing import Any

from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import Host, PlanStep

ADDRESSABLE_BYTES = 2**47
CLOSE = 0.8
"""A training estimate above this share of the device's memory is warned about."""
ACTIVATION_VALUES = 17
"""Values kept per token, layer and unit of width for the backward pass of a transformer block: 34 bytes at 16 bits
(Korthikanti et al., 2022, "Reducing Activation Recomputation in Large Transformer Models", without the attention
score term that fused attention does not keep)."""

FIX = {
    "pretrain": "make the model smaller (model.d_model, model.n_layer), the batch smaller (batch_size, "
                "micro_batch_size, eval_batches), or shard the model over processes (sharding = \"fsdp\", run.nproc)",
    "finetune": "lower batch_size, micro_batch_size or eval_batches, or start from a smaller model",
    "evaluate": "lower batch_size, or evaluate a smaller model",
}


def check_sizes(steps: list[PlanStep], host: Host | None = None, device: str = "cpu") -> list[str]:
    """Refuse steps that cannot fit (one problem each); return warnings for training steps close to the device's
    memory. Without `host` only the addressable limit is checked."""
    by_name = {step.name: step for step in steps}
    problems, warnings = [], []
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
        elif step.kind in ("pretrain", "finetune") and host is not None:
            verdict = device_verdict(step, host, device)
            if verdict is not None:
                (problems if verdict[0] else warnings).append(verdict[1])
    if problems:
        raise RecipeError(problems)
    return warnings


def device_verdict(step: PlanStep, host: Host, device: str) -> tuple[bool, str] | None:
    """(refused, message) when the step's training estimate passes the device's memory or comes close to it."""
    spec = step.spec
    local = host.local_processes(spec.get("nproc", 1))
    have = host.gpu_memory_bytes if device == "cuda" else (host.memory_bytes // local if host.memory_bytes else None)
    if not have:
        return None
    need = training_memory(spec, step.derived["n_params"], step.kind)
    total = sum(need.values())
    if total <= CLOSE * have:
        return None
    where = "one GPU" if device == "cuda" else "this machine's RAM" + (f" shared by {local} processes" if local > 1 else "")
    parts = ", ".join(f"{what} {gib(size)}" for what, size in need.items())
    if total > have:
        return True, (f"steps.{step.name}: training needs at least {gib(total)} ({parts}) but {where} has {gib(have)}; "
                      f"{memory_fix(spec)}")
    return False, (f"steps.{step.name}: training needs at least {gib(total)} ({parts}), {total / have:.0%} of the "
                   f"{gib(have)} {where} has; it may run out of memory. If it does: {memory_fix(spec)}")


def training_memory(spec: dict[str, Any], n_params: int, kind: str) -> dict[str, int]:
    """Estimated bytes one training process holds at its peak, by what holds them."""
    shape = spec["model"]
    seq_len = shape["seq_len"] if kind == "pretrain" else spec["seq_len"]
    tokens = spec["micro_batch_size"] * seq_len
    per_value = 2 if spec.get("precision") == "bf16" else 4
    per_layer = ACTIVATION_VALUES * tokens * shape["d_model"] * per_value
    if spec.get("activation_checkpointing"):  # each block keeps its input; one block is recomputed at a time
        activations = shape["n_layer"] * tokens * shape["d_model"] * 4 + per_layer
    else:
        activations = shape["n_layer"] * per_layer
    return {
        "weights, gradients and optimizer moments": training_bytes(spec, n_params, kind)["training state"],
        "activations": activations,
        "logits and their gradient": 2 * 4 * tokens * shape["vocab_size"],
    }


def memory_fix(spec: dict[str, Any]) -> str:
    fixes = [f"a smaller micro_batch_size (now {spec['micro_batch_size']})"]
    if not spec.get("activation_checkpointing"):
        fixes.append("activation_checkpointing = true")
    if spec.get("sharding") != "fsdp":
        fixes.append("sharding = \"fsdp\" over more processes (run.nproc)")
    return "try " + ", ".join(fixes) + ", or a smaller model (model.d_model, model.n_layer)"


def gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"


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
