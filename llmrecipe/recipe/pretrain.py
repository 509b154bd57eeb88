"""The `pretrain` step: a decoder-only transformer trained from scratch on packed tokens."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from llmrecipe.recipe.base import Section, StepName


class ModelConfig(Section):
    """Shape of the network. Head size, parameter count and FLOPs are derived by `llmrecipe plan`."""

    arch: Literal["llama"] = "llama"
    """Architecture: `llama` (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases)."""
    n_layer: int = Field(default=4, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_kv_head: int | None = Field(default=None, ge=1)
    """Key/value heads for grouped-query attention; defaults to `n_head` (plain multi-head attention)."""
    d_model: int = Field(default=256, ge=8)
    """Width of the residual stream; must be a multiple of `n_head`."""
    seq_len: int = Field(default=256, ge=2)
    """Context length in tokens."""
    ffn_mult: float = Field(default=8 / 3, gt=0)
    """SwiGLU hidden width as a multiple of `d_model` (rounded up to a multiple of 64)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    rope_theta: float = Field(default=10000.0, gt=0)
    tie_embeddings: bool = True
    """Share the input embedding and the output projection (saves vocab x d_model parameters)."""


class OptimConfig(Section):
    """AdamW with linear warmup and a cosine (or constant) schedule."""

    lr: float = Field(default=1e-3, gt=0)
    """Peak learning rate, reached at the end of warmup."""
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    """The cosine schedule ends at `lr * min_lr_ratio`."""
    warmup: int = Field(default=100, ge=0)
    """Warmup length in optimizer steps."""
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(default=0.1, ge=0.0)
    """Decoupled weight decay on matrices; norms and embeddings are not decayed."""
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    """Clip the global gradient norm to this value; unset to turn clipping off."""


class Budget(Section):
    """How long to train: give exactly one of `tokens` or `steps`."""

    tokens: int | None = Field(default=None, ge=1)
    """Total training tokens; the number of steps is derived from the tokens per step."""
    steps: int | None = Field(default=None, ge=1)
    """Total optimizer steps."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Budget":
        if (self.tokens is None) == (self.steps is None):
            raise ValueError("give exactly one of `tokens` or `steps`")
        return self


class PretrainStep(Section):
    """Pre-train a language model on the train split of a data step, tokenized by a tokenizer step."""

    kind: Literal["pretrain"]
    data: StepName
    """The `data` step to train on."""
    tokenizer: StepName
    """The `tokenizer` step that turns the data into tokens."""
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    budget: Budget
    batch_size: int = Field(default=16, ge=1)
    """Sequences per optimizer step."""
    micro_batch_size: int | None = Field(default=None, ge=1)
    """Sequences per forward pass; smaller than `batch_size` means gradient accumulation. Defaults to `batch_size`."""
    eval_every: int = Field(default=100, ge=1)
    """Measure validation loss every this many steps (and at the end)."""
    eval_batches: int = Field(default=20, ge=1)
    """Batches of validation data per measurement."""
    checkpoint_every: int = Field(default=100, ge=1)
    """Save a resumable checkpoint every this many steps."""
    log_every: int = Field(default=10, ge=1)
    """Write a metrics line every this many steps."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile: `auto` turns it on where it pays back (CUDA); cold compiles cost ~40 s on a CPU."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """`bf16` autocast where the device supports it (CUDA, CPUs with AVX512-BF16/AMX), else fp32."""

    # Fields that cannot change the trained weights or metrics, so a change to them must not re-train.
    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset(
        {
            "checkpoint_every",  # resume is exact, so where checkpoints fall does not change the result
            "log_every",  # only how often a metrics line is printed
        }
    )
