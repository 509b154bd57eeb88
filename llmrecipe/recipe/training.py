"""The controls every training step shares (`pretrain`, `finetune`): batches, validation, checkpoints, precision,
compile, distribution and what to do when the loss stops being finite. The trainer gives every task all of them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmrecipe.recipe.base import MAX_BATCH, MAX_EVAL_BATCHES, Section


class TrainingControls(Section):
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH)
    """Examples per optimizer step over all processes: windows (`pretrain`, `continue`), packed sequences (`sft`),
    labelled texts (`classify`)."""
    micro_batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH)
    """Examples per forward pass and process; fewer than a process's share of the batch means gradient
    accumulation (the loss stays a mean over the whole batch). Defaults to the whole share."""
    eval_every: int = Field(default=100, ge=1)
    """Measure validation loss every this many steps (and at the end)."""
    eval_batches: int = Field(default=20, ge=1, le=MAX_EVAL_BATCHES)
    """Batches of validation data per measurement (at most: a small held-out set is used whole)."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Stop when this many validations in a row bring no new best validation loss; unset to train to the end."""
    on_nonfinite: Literal["stop", "skip", "rollback"] = "stop"
    """When a step's loss or gradient is NaN or infinite: `stop` with a message, `skip` that batch, or `rollback` to
    the last checkpoint and continue without that batch."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory, about a third more compute."""
    checkpoint_every: int = Field(default=100, ge=1)
    """Save a resumable checkpoint every this many steps."""
    log_every: int = Field(default=10, ge=1)
    """Write a metrics line every this many steps."""
    tensorboard: bool = False
    """Also write the metrics as TensorBoard events (`tensorboard --logdir` on the step's scratch or store folder);
    needs `pip install tensorboard`. Like `log_every` it is not part of the step's identity."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile: `auto` compiles where it pays back: always on CUDA; on a CPU when the plan's estimate of the
    training time is several times a cold compile's cost (`llmrecipe plan` shows the estimate and the choice)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """`auto`: bf16 autocast where the device supports it (CUDA, CPUs with AVX512-BF16/AMX; on a CPU only for
    models at least 192 wide, below which fp32 is faster), else fp32."""
    sharding: Literal["ddp", "fsdp"] = "ddp"
    """With `run.nproc` > 1 (or a torchrun launch): `ddp` replicates the model in every process, `fsdp` shards
    weights, gradients and optimizer state across them (FSDP2)."""
