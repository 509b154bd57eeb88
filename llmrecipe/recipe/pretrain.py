"""The `pretrain` step: a language model trained from scratch on packed tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmrecipe.recipe.base import (MAX_BATCH_TOKENS, MAX_EVAL_BATCHES, MAX_HEADS, MAX_LAYERS, MAX_SEQ_LEN, MAX_WIDTH,
                                   Section, StepName)
from llmrecipe.recipe.training import TrainingControls


class ModelConfig(Section):
    """Shape of the network. Head size, parameter count and FLOPs are derived by `llmrecipe plan`."""

    arch: Literal["llama", "gpt2", "bert", "t5", "lstm"] = "llama"
    """Architecture: `llama` (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases), `gpt2` (learned
    positions, LayerNorm, GELU MLP, biases), `bert` (bidirectional encoder trained by masked-language modelling),
    `t5` (T5 v1.1 encoder-decoder trained by span corruption: RMSNorm, relative position buckets, gated-GELU,
    untied embeddings) or `lstm` (a recurrent baseline: `n_layer` LSTM layers of width `d_model`)."""
    n_layer: int = Field(default=4, ge=1, le=MAX_LAYERS)
    """Layers (for `t5`: of each stack, unless `n_encoder_layer` / `n_decoder_layer` say otherwise)."""
    n_encoder_layer: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    """`t5`: layers of the encoder; defaults to `n_layer`."""
    n_decoder_layer: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    """`t5`: layers of the decoder; defaults to `n_layer`."""
    n_head: int = Field(default=4, ge=1, le=MAX_HEADS)
    """Attention heads (not used by `lstm`)."""
    n_kv_head: int | None = Field(default=None, ge=1, le=MAX_HEADS)
    """Key/value heads for grouped-query attention (`llama` only); defaults to `n_head` (plain multi-head attention)."""
    d_model: int = Field(default=256, ge=8, le=MAX_WIDTH)
    """Width of the residual stream (the hidden size for `lstm`); a multiple of `n_head` for attention models."""
    seq_len: int = Field(default=256, ge=2, le=MAX_SEQ_LEN)
    """Context length in tokens (for `t5`: the encoder's input length; the plan derives the target length)."""
    ffn_mult: float | None = Field(default=None, gt=0, le=64)
    """MLP hidden width as a multiple of `d_model`, rounded up to a multiple of 64. Unset: 8/3 for `llama`'s
    SwiGLU (the parameters of a 4x MLP), 4 for `gpt2` and `bert`."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    rope_theta: float = Field(default=10000.0, gt=0)
    """Base of the rotary position angles (`llama` only)."""
    tie_embeddings: bool = True
    """Share the input embedding and the output projection (saves vocab x d_model parameters)."""
    mask_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    """`bert`: fraction of positions chosen as masked-language-modelling targets (of which 80% become the mask
    token, 10% a random token, 10% stay), as in Devlin et al. (2019)."""
    sentinels: int = Field(default=100, ge=1, le=1000)
    """`t5`: sentinel tokens `<extra_id_0>`, `<extra_id_1>`, ... appended to the tokenizer, numbered down from the
    top of its ids; span corruption replaces each corrupted span by one."""
    noise_density: float = Field(default=0.15, gt=0.0, lt=1.0)
    """`t5`: fraction of each pre-training example's tokens corrupted by span corruption (Raffel et al., 2020)."""
    mean_span_length: float = Field(default=3.0, ge=1.0, le=100.0)
    """`t5`: mean length of a corrupted span."""


class OptimConfig(Section):
    """Optimizer and learning-rate schedule: linear warmup, then constant, linear, cosine or warmup-stable-decay."""

    name: Literal["adamw", "sgd"] = "adamw"
    """`adamw` (decoupled weight decay on matrices only) or `sgd` with momentum."""
    lr: float = Field(default=1e-3, gt=0)
    """Peak learning rate, reached at the end of warmup."""
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    """Decaying schedules end at `lr * min_lr_ratio`."""
    warmup: int = Field(default=100, ge=0)
    """Warmup length in optimizer steps."""
    warmup_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    """Warmup as a fraction of all steps; when set it replaces `warmup` (the plan shows the resulting steps)."""
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    """After warmup: `cosine` or `linear` decay to the floor, `constant`, or `wsd` (warmup-stable-decay: constant,
    then a linear decay to the floor over the last `decay_fraction` of the steps)."""
    decay_fraction: float = Field(default=0.2, gt=0.0, le=1.0)
    """`wsd` only: the share of all steps spent in the final decay."""
    weight_decay: float = Field(default=0.1, ge=0.0)
    """Decoupled weight decay on matrices; norms, biases and embeddings are not decayed."""
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    """AdamW's first-moment decay."""
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    """AdamW's second-moment decay."""
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    """SGD's momentum."""
    grad_clip: float | None = Field(default=1.0, gt=0)
    """Clip the global gradient norm to this value; unset to turn clipping off."""

    @model_validator(mode="after")
    def _one_warmup(self) -> "OptimConfig":
        if self.warmup_fraction is not None and "warmup" in self.model_fields_set:
            raise ValueError("give `warmup` (steps) or `warmup_fraction`, not both")
        return self


class Budget(Section):
    """How long to train: give exactly one of `tokens`, `steps` or `epochs`."""

    tokens: int | None = Field(default=None, ge=1)
    """Total training tokens; the number of steps is derived from the tokens per step."""
    steps: int | None = Field(default=None, ge=1)
    """Total optimizer steps."""
    epochs: float | None = Field(default=None, gt=0)
    """Passes over the train split's tokens; the steps follow from its size, counted when training starts."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Budget":
        if sum(value is not None for value in (self.tokens, self.steps, self.epochs)) != 1:
            raise ValueError("give exactly one of `tokens`, `steps` or `epochs`")
        return self


class PretrainStep(TrainingControls):
    """Pre-train a language model on the train split of a data step, tokenized by a tokenizer step."""

    kind: Literal["pretrain"]
    data: StepName
    """The `data` step to train on."""
    tokenizer: StepName
    """The `tokenizer` step that turns the data into tokens."""
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    budget: Budget
    batch_tokens: int | None = Field(default=None, ge=1, le=MAX_BATCH_TOKENS)
    """Tokens per optimizer step; when set it replaces `batch_size` and must be a multiple of `model.seq_len`."""
    final_eval_batches: int | None = Field(default=None, ge=1, le=MAX_EVAL_BATCHES)
    """Once training ends, score the best weights on up to this many batches of non-overlapping windows spread
    evenly over the validation split (the whole split when it holds no more) and report that as `best_val_loss`:
    free of the bias of taking the best of several noisy measurements, so the periodic ones can stay small.
    Unset: `best_val_loss` is the best periodic measurement."""

    @model_validator(mode="after")
    def _one_batch_size(self) -> "PretrainStep":
        if self.batch_tokens is not None and "batch_size" in self.model_fields_set:
            raise ValueError("give `batch_size` (sequences) or `batch_tokens`, not both")
        return self
