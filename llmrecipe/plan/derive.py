"""Derived values: computed once here, shown by `llmrecipe plan`, covered by the fingerprint.

Each function takes a step's user config (and what it needs from upstream configs) and returns the
resolved spec the executor runs with. Problems are returned as messages for the compiler to raise.
"""

from __future__ import annotations

import math
from typing import Any

from llmrecipe.plan.plan import Host
from llmrecipe.plan.specs import ModelShape, PretrainSpec
from llmrecipe.recipe.pretrain import PretrainStep
from llmrecipe.recipe.tokenizer import TokenizerStep


class DerivationError(ValueError):
    """A combination of settings that cannot work; the message names the fields and the fix."""


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def model_shape(step: PretrainStep, tokenizer: TokenizerStep) -> ModelShape:
    m = step.model
    if m.d_model % m.n_head:
        raise DerivationError(
            f"model.d_model = {m.d_model} is not a multiple of model.n_head = {m.n_head}; "
            f"pick d_model = {round_up(m.d_model, m.n_head)} or an n_head that divides it"
        )
    n_kv_head = m.n_kv_head or m.n_head
    if m.n_head % n_kv_head:
        raise DerivationError(
            f"model.n_head = {m.n_head} is not a multiple of model.n_kv_head = {n_kv_head}; "
            "each key/value head must serve the same number of query heads"
        )
    head_dim = m.d_model // m.n_head
    if head_dim % 2:
        raise DerivationError(f"head size d_model / n_head = {head_dim} is odd; rotary embeddings need an even head size")
    return ModelShape(
        arch=m.arch,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_kv_head=n_kv_head,
        d_model=m.d_model,
        head_dim=head_dim,
        ffn_hidden=round_up(m.ffn_mult * m.d_model, 64),
        vocab_size=round_up(tokenizer.vocab_size, 64),
        seq_len=m.seq_len,
        dropout=m.dropout,
        rope_theta=m.rope_theta,
        tie_embeddings=m.tie_embeddings,
    )


def parameter_count(shape: ModelShape) -> int:
    d, kv = shape.d_model, shape.n_kv_head * shape.head_dim
    attention = d * d + 2 * d * kv + d * d  # q, k, v, o projections, no biases
    mlp = 3 * d * shape.ffn_hidden  # SwiGLU: gate, up, down
    per_layer = attention + mlp + 2 * d  # two RMSNorm gains
    embeddings = shape.vocab_size * d * (1 if shape.tie_embeddings else 2)
    return shape.n_layer * per_layer + embeddings + d  # + final norm


def flops_per_token(shape: ModelShape, n_params: int) -> int:
    """Training FLOPs per token: 6N for the matmuls plus 12·L·d·T for attention scores (PaLM, appendix B)."""
    embedding_lookup = shape.vocab_size * shape.d_model if shape.tie_embeddings else 0
    # With tied weights the embedding matrix is counted once, as the output projection (a real matmul).
    matmul_params = n_params - (0 if shape.tie_embeddings else embedding_lookup)
    return 6 * matmul_params + 12 * shape.n_layer * shape.d_model * shape.seq_len


def pretrain_spec(step: PretrainStep, tokenizer: TokenizerStep, device: str, host: Host, seed: int) -> PretrainSpec:
    shape = model_shape(step, tokenizer)
    micro = step.micro_batch_size or step.batch_size
    if step.batch_size % micro:
        raise DerivationError(
            f"batch_size = {step.batch_size} is not a multiple of micro_batch_size = {micro}; "
            "gradient accumulation needs whole micro-batches"
        )
    tokens_per_step = step.batch_size * shape.seq_len
    total_steps = step.budget.steps or math.ceil(step.budget.tokens / tokens_per_step)
    if step.optim.warmup >= total_steps:
        raise DerivationError(
            f"optim.warmup = {step.optim.warmup} steps is not shorter than the whole run ({total_steps} steps); "
            "lower the warmup or raise the budget"
        )
    return PretrainSpec(
        model=shape,
        optim=step.optim,
        batch_size=step.batch_size,
        micro_batch_size=micro,
        grad_accum=step.batch_size // micro,
        tokens_per_step=tokens_per_step,
        total_steps=total_steps,
        eval_every=step.eval_every,
        eval_batches=step.eval_batches,
        checkpoint_every=step.checkpoint_every,
        log_every=step.log_every,
        device=device,
        precision=_precision(step.precision, device, host),
        compile=_compile(step.compile, device),
        seed=seed,
    )


def pretrain_summary(spec: PretrainSpec) -> dict[str, Any]:
    """The derived numbers a user wants to see before committing hours of compute."""
    n_params = parameter_count(spec.model)
    flops = flops_per_token(spec.model, n_params)
    return {
        "head_dim": spec.model.head_dim,
        "ffn_hidden": spec.model.ffn_hidden,
        "vocab_size": spec.model.vocab_size,
        "n_params": n_params,
        "flops_per_token": flops,
        "train_flops": flops * spec.tokens_per_step * spec.total_steps,
        "tokens_per_step": spec.tokens_per_step,
        "grad_accum": spec.grad_accum,
        "total_steps": spec.total_steps,
        "total_tokens": spec.tokens_per_step * spec.total_steps,
        # fp32 weights + gradients + two AdamW moments; activations come on top.
        "train_state_bytes": 16 * n_params,
        "device": spec.device,
        "precision": spec.precision,
        "compile": spec.compile,
    }


def _precision(choice: str, device: str, host: Host) -> str:
    if choice != "auto":
        return choice
    bf16_is_fast = device == "cuda" or host.cpu_bf16
    return "bf16" if bf16_is_fast else "fp32"


def _compile(choice: str, device: str) -> bool:
    if choice != "auto":
        return choice == "on"
    # On a CPU a cold compile costs ~40 s and small models rarely win it back in one run; on CUDA it pays.
    return device == "cuda"
