"""Derived values: computed once here, shown by `llmrecipe plan`, covered by the fingerprint.

Each function takes a step's user config (and what it needs from upstream configs) and returns the
resolved spec the executor runs with. Problems are returned as messages for the compiler to raise.
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

from llmrecipe.plan.plan import Host
from llmrecipe.plan.specs import DataSpec, FinetuneSpec, ModelShape, PretrainSpec
from llmrecipe.recipe.finetune import CHAT_TEMPLATES, FinetuneStep
from llmrecipe.recipe.pretrain import OptimConfig, PretrainStep
from llmrecipe.recipe.tokenizer import TokenizerStep


class DerivationError(ValueError):
    """A combination of settings that cannot work; the message names the fields and the fix."""


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


FFN_MULT = {"llama": 8 / 3, "gpt2": 4.0, "bert": 4.0, "lstm": 0.0}
"""MLP width per architecture when `model.ffn_mult` is unset: SwiGLU's 8/3 has the parameters of a 4x GELU MLP."""


def model_shape(step: PretrainStep, tokenizer: TokenizerStep) -> ModelShape:
    m = step.model
    attention = m.arch != "lstm"
    if attention and m.d_model % m.n_head:
        raise DerivationError(
            f"model.d_model = {m.d_model} is not a multiple of model.n_head = {m.n_head}; "
            f"pick d_model = {round_up(m.d_model, m.n_head)} or an n_head that divides it"
        )
    if m.n_kv_head is not None and m.arch != "llama":
        raise DerivationError(f"model.n_kv_head: grouped-query attention is part of `llama`, not `{m.arch}`; remove it")
    n_kv_head = m.n_kv_head or m.n_head
    if m.n_head % n_kv_head:
        raise DerivationError(
            f"model.n_head = {m.n_head} is not a multiple of model.n_kv_head = {n_kv_head}; "
            "each key/value head must serve the same number of query heads"
        )
    head_dim = m.d_model // m.n_head
    if m.arch == "llama" and head_dim % 2:
        raise DerivationError(f"head size d_model / n_head = {head_dim} is odd; rotary embeddings need an even head size")
    ffn_mult = m.ffn_mult if m.ffn_mult is not None else FFN_MULT[m.arch]
    # A masked-language model needs one extra id, the mask token, right after the tokenizer's vocabulary.
    rows = tokenizer.vocab_size + (1 if m.arch == "bert" else 0)
    return ModelShape(
        arch=m.arch,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_kv_head=n_kv_head,
        d_model=m.d_model,
        head_dim=head_dim,
        ffn_hidden=round_up(ffn_mult * m.d_model, 64) if attention else 0,
        vocab_size=round_up(rows, 64),
        seq_len=m.seq_len,
        dropout=m.dropout,
        rope_theta=m.rope_theta,
        tie_embeddings=m.tie_embeddings,
        mask_token_id=tokenizer.vocab_size if m.arch == "bert" else None,
        mask_fraction=m.mask_fraction,
    )


def parameter_count(shape: ModelShape) -> int:
    """Exactly the parameters of the built model (tests/test_models.py checks every architecture)."""
    d, L = shape.d_model, shape.n_layer
    embeddings = shape.vocab_size * d * (1 if shape.tie_embeddings else 2)
    if shape.arch == "lstm":
        # Per layer: input-to-hidden and hidden-to-hidden matrices for 4 gates, each with a bias (PyTorch keeps two).
        return embeddings + L * (4 * d * d + 4 * d * d + 8 * d)
    if shape.arch == "llama":
        kv = shape.n_kv_head * shape.head_dim
        attention = d * d + 2 * d * kv + d * d  # q, k, v, o projections, no biases
        mlp = 3 * d * shape.ffn_hidden  # SwiGLU: gate, up, down
        per_layer = attention + mlp + 2 * d  # two RMSNorm gains
        return L * per_layer + embeddings + d  # + final norm
    # gpt2 and bert: biases everywhere, LayerNorms with gain and bias.
    attention = 4 * d * d + 4 * d  # q, k, v, o with biases
    mlp = 2 * d * shape.ffn_hidden + shape.ffn_hidden + d
    per_layer = attention + mlp + 4 * d  # two LayerNorms
    positions = shape.seq_len * d
    output_bias = shape.vocab_size if shape.arch == "bert" else 0
    return L * per_layer + embeddings + positions + 2 * d + output_bias  # + final LayerNorm


def flops_per_token(shape: ModelShape, n_params: int) -> int:
    """Training FLOPs per token: 6N for the matmuls plus 12·L·d·T for attention scores (PaLM, appendix B)."""
    embedding_lookup = shape.vocab_size * shape.d_model if shape.tie_embeddings else 0
    # With tied weights the embedding matrix is counted once, as the output projection (a real matmul).
    matmul_params = n_params - (0 if shape.tie_embeddings else embedding_lookup)
    if shape.arch in ("gpt2", "bert"):
        matmul_params -= shape.seq_len * shape.d_model  # learned positions are a lookup, not a matmul
    attention = 0 if shape.arch == "lstm" else 12 * shape.n_layer * shape.d_model * shape.seq_len
    return 6 * matmul_params + attention


def pretrain_spec(step: PretrainStep, tokenizer: TokenizerStep, device: str, host: Host, seed: int, nproc: int = 1) -> PretrainSpec:
    shape = model_shape(step, tokenizer)
    batch_size = _batch_size(step, shape)
    if batch_size % nproc:
        raise DerivationError(
            f"batch_size = {batch_size} sequences do not split evenly over {nproc} processes (run.nproc or the "
            f"torchrun launch); pick a batch size that is a multiple of {nproc}"
        )
    share = batch_size // nproc
    micro = step.micro_batch_size or share
    if share % micro:
        who = f"batch_size = {batch_size}" if nproc == 1 else f"each process's share of {share} sequences"
        raise DerivationError(
            f"{who} is not a multiple of micro_batch_size = {micro}; gradient accumulation needs whole micro-batches"
        )
    tokens_per_step = batch_size * shape.seq_len
    total_steps = step.budget.steps or (math.ceil(step.budget.tokens / tokens_per_step) if step.budget.tokens else None)
    optim = _resolved_warmup(step, total_steps)
    if total_steps is not None and optim.warmup >= total_steps:
        raise DerivationError(
            f"optim.warmup = {optim.warmup} steps is not shorter than the whole run ({total_steps} steps); "
            "lower the warmup or raise the budget"
        )
    return PretrainSpec(
        model=shape,
        optim=optim,
        batch_size=batch_size,
        micro_batch_size=micro,
        grad_accum=share // micro,
        tokens_per_step=tokens_per_step,
        total_steps=total_steps,
        epochs=step.budget.epochs,
        eval_every=step.eval_every,
        eval_batches=step.eval_batches,
        final_eval_batches=step.final_eval_batches,
        early_stopping_patience=step.early_stopping_patience,
        on_nonfinite=step.on_nonfinite,
        activation_checkpointing=step.activation_checkpointing,
        checkpoint_every=step.checkpoint_every,
        log_every=step.log_every,
        tensorboard=step.tensorboard,
        device=device,
        precision=_precision(step.precision, device, host, shape.d_model),
        compile=_compile(step.compile, device),
        nproc=nproc,
        sharding=step.sharding,
        seed=seed,
    )


def _batch_size(step: PretrainStep, shape: ModelShape) -> int:
    if step.batch_tokens is None:
        return step.batch_size
    if step.batch_tokens % shape.seq_len:
        raise DerivationError(
            f"batch_tokens = {step.batch_tokens} is not a multiple of model.seq_len = {shape.seq_len}; "
            f"pick {round_up(step.batch_tokens, shape.seq_len)}"
        )
    return step.batch_tokens // shape.seq_len


def _resolved_warmup(step: PretrainStep, total_steps: int | None):
    """`warmup_fraction` turned into steps, so the spec (and the fingerprint) hold the number that is used."""
    optim = step.optim
    if optim.warmup_fraction is None:
        return optim
    if total_steps is None:
        raise DerivationError(
            "optim.warmup_fraction needs a budget in steps or tokens (an epoch budget's length is known only "
            "when training starts); give optim.warmup in steps instead"
        )
    return optim.model_copy(update={"warmup": int(optim.warmup_fraction * total_steps), "warmup_fraction": None})


def pretrain_summary(spec: PretrainSpec) -> dict[str, Any]:
    """The derived numbers a user wants to see before committing hours of compute."""
    n_params = parameter_count(spec.model)
    flops = flops_per_token(spec.model, n_params)
    steps = spec.total_steps
    return {
        "head_dim": spec.model.head_dim,
        "ffn_hidden": spec.model.ffn_hidden,
        "vocab_size": spec.model.vocab_size,
        "n_params": n_params,
        "flops_per_token": flops,
        "train_flops": flops * spec.tokens_per_step * steps if steps else "follows from the epoch budget",
        "tokens_per_step": spec.tokens_per_step,
        "grad_accum": spec.grad_accum,
        "warmup_steps": spec.optim.warmup,
        "total_steps": steps if steps else f"{spec.epochs} epochs of the train split",
        "total_tokens": spec.tokens_per_step * steps if steps else f"{spec.epochs} epochs of the train split",
        # fp32 weights + gradients + two AdamW moments (one for SGD); activations come on top.
        "train_state_bytes": (16 if spec.optim.name == "adamw" else 12) * n_params,
        "device": spec.device,
        "precision": spec.precision,
        "compile": spec.compile,
        "processes": spec.nproc,
    }


def data_summary(spec: DataSpec) -> dict[str, Any]:
    """Per dedup_near op: its LSH banding (bands x rows) and where the banding's S-curve puts the similarity
    at which a pair becomes a candidate, so a threshold the banding cannot reach shows before the run."""
    found: dict[str, Any] = {}
    for index, op in enumerate(spec.ops):
        if op.op != "dedup_near":
            continue
        rows = op.num_perm // op.bands
        # A pair of Jaccard similarity s shares at least one band with probability 1 - (1 - s^rows)^bands;
        # the curve is steepest near (1 / bands)^(1 / rows).
        found[f"ops[{index}].lsh_bands_x_rows"] = f"{op.bands} x {rows}"
        found[f"ops[{index}].lsh_threshold_estimate"] = round((1 / op.bands) ** (1 / rows), 3)
        found[f"ops[{index}].candidate_probability_at_threshold"] = round(1 - (1 - op.threshold**rows) ** op.bands, 4)
    return found


CPU_BF16_MIN_WIDTH = 192
"""On a CPU, bf16 autocast pays only from this model width up: below it the casts cost more than the faster
matmuls save (measured here: a 4-layer GPT-2 trains 0.88x as fast in bf16 at width 128, 1.18x at 192)."""


def _precision(choice: str, device: str, host: Host, d_model: int | None = None) -> str:
    if choice != "auto":
        return choice
    bf16_is_fast = device == "cuda" or (host.cpu_bf16 and (d_model is None or d_model >= CPU_BF16_MIN_WIDTH))
    return "bf16" if bf16_is_fast else "fp32"


def _compile(choice: str, device: str) -> bool:
    if choice != "auto":
        return choice == "on"
    # On a CPU a cold compile costs ~40 s and small models rarely win it back in one run; on CUDA it pays.
    return device == "cuda"


LORA_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "gpt2": ["attn.qkv", "attn.proj"],
                "bert": ["attn.qkv", "attn.proj"]}
"""Default LoRA targets per architecture: the attention projections, as in Hu et al. (2021)."""


def linear_layers(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Module name -> (in, out) features of every nn.Linear of the built model (models/*.py)."""
    d, f, kv = shape.d_model, shape.ffn_hidden, shape.n_kv_head * shape.head_dim
    if shape.arch == "llama":
        block = {"attn.q_proj": (d, d), "attn.k_proj": (d, kv), "attn.v_proj": (d, kv), "attn.o_proj": (d, d),
                 "mlp.gate_proj": (d, f), "mlp.up_proj": (d, f), "mlp.down_proj": (f, d)}
    elif shape.arch in ("gpt2", "bert"):
        block = {"attn.qkv": (d, 3 * d), "attn.proj": (d, d), "mlp.fc": (d, f), "mlp.proj": (f, d)}
    else:
        block = {}
    layers = {f"blocks.{i}.{name}": size for i in range(shape.n_layer) for name, size in block.items()}
    return {**layers, "lm_head": (d, shape.vocab_size)}


def matches_target(module_name: str, target: str) -> bool:
    """A target names a module by a dotted suffix: `q_proj` and `attn.q_proj` both match `blocks.0.attn.q_proj`."""
    return module_name == target or module_name.endswith("." + target)


def lora_parameter_count(shape: ModelShape, targets: list[str], rank: int) -> int:
    """Adapter parameters: rank x (in + out) per adapted linear layer (A is rank x in, B is out x rank)."""
    return sum(rank * (i + o) for name, (i, o) in linear_layers(shape).items() if any(matches_target(name, t) for t in targets))


def finetune_spec(step: FinetuneStep, init: ModelShape, token_bound: int, device: str, host: Host, seed: int,
                  dataset_file: str | None) -> FinetuneSpec:
    """`init` is the starting model's shape, `token_bound` an upper bound of its tokenizer's ids."""
    if step.task in ("sft", "continue") and init.arch not in ("llama", "gpt2"):
        raise DerivationError(f"task = '{step.task}' trains a decoder (llama, gpt2); the init model is `{init.arch}`")
    if step.task == "classify" and step.pooling == "first" and init.arch != "bert":
        raise DerivationError(f"pooling = 'first' on a `{init.arch}` decoder: its first state sees only the first "
                              "token, so every text would look alike; use 'last' (or 'auto')")
    template, specials, end_of_turn = _chat_template(step)
    added = len(specials) if step.task == "sft" else 0  # an upper bound: tokens the tokenizer has already are kept
    model = init.model_copy(update={"vocab_size": max(init.vocab_size, round_up(token_bound + added, 64))})
    seq_len = step.max_seq_len or init.seq_len
    if seq_len > init.seq_len:
        raise DerivationError(f"max_seq_len = {seq_len} is longer than the init model's seq_len = {init.seq_len}; "
                              f"pick at most {init.seq_len}")
    micro = step.micro_batch_size or step.batch_size
    if step.batch_size % micro:
        raise DerivationError(f"batch_size = {step.batch_size} is not a multiple of micro_batch_size = {micro}; "
                              "gradient accumulation needs whole micro-batches")
    tokens_per_step = step.batch_size * seq_len
    budget = step.budget
    total_steps = budget.steps or (math.ceil(budget.tokens / tokens_per_step) if budget.tokens else None)
    optim = _resolved_warmup(step, total_steps)
    if total_steps is not None and optim.warmup >= total_steps:
        raise DerivationError(f"optim.warmup = {optim.warmup} steps is not shorter than the whole run ({total_steps} "
                              "steps); lower the warmup or raise the budget")
    dataset = step.dataset.model_copy(update={"path": posixpath.basename(step.dataset.path)}) if step.dataset else None
    return FinetuneSpec(
        task=step.task, init_model=init, model=model, dataset=dataset, dataset_file=dataset_file,
        chat_template=template, special_tokens=specials, end_of_turn=end_of_turn, seq_len=seq_len,
        labels=step.labels, class_weighting=step.class_weighting,
        pooling=("first" if init.arch == "bert" else "last") if step.pooling == "auto" else step.pooling,
        lora=_resolved_lora(step, model), optim=OptimConfig.model_validate(optim.model_dump()),
        batch_size=step.batch_size, micro_batch_size=micro, grad_accum=step.batch_size // micro,
        tokens_per_step=tokens_per_step, total_steps=total_steps, epochs=budget.epochs, eval_every=step.eval_every,
        eval_batches=step.eval_batches, early_stopping_patience=step.early_stopping_patience,
        checkpoint_every=step.checkpoint_every, log_every=step.log_every, tensorboard=step.tensorboard, device=device,
        precision=_precision(step.precision, device, host, model.d_model), compile=_compile(step.compile, device),
        seed=seed,
    )


def _chat_template(step: FinetuneStep) -> tuple[str | None, list[str], str | None]:
    if step.task != "sft":
        return None, [], None
    if step.chat_template is not None:
        return step.chat_template, list(step.special_tokens), step.end_of_turn
    return CHAT_TEMPLATES[step.template]


def _resolved_lora(step: FinetuneStep, shape: ModelShape):
    if step.lora is None:
        return None
    if shape.arch not in LORA_TARGETS:
        raise DerivationError(f"lora: adapters fit attention models (llama, gpt2, bert), not `{shape.arch}`; remove [lora]")
    targets = step.lora.targets or LORA_TARGETS[shape.arch]
    names = linear_layers(shape)
    unmatched = [t for t in targets if not any(matches_target(name, t) for name in names)]
    if unmatched:
        suffixes = sorted({name.split(".", 2)[-1] for name in names})
        raise DerivationError(f"lora.targets {unmatched} name no linear layer of this `{shape.arch}` model; "
                              f"its layers are {suffixes}")
    if step.task == "classify" and any(matches_target("lm_head", t) for t in targets):
        raise DerivationError("lora.targets: a classify step replaces `lm_head` by its head, which trains in full; "
                              "leave lm_head out of the targets")
    if shape.tie_embeddings and any(matches_target("lm_head", t) for t in targets):
        raise DerivationError("lora.targets: `lm_head` shares its weight with the embedding (tie_embeddings); "
                              "an adapter on it would untie them. Leave lm_head out of the targets")
    return step.lora.model_copy(update={"targets": list(targets)})


def finetune_summary(spec: FinetuneSpec) -> dict[str, Any]:
    """What `llmrecipe plan` shows for a finetune step: how much trains, on what, for how long."""
    n_params = parameter_count(spec.model)
    new_rows = (spec.model.vocab_size - spec.init_model.vocab_size) * spec.model.d_model
    trainable = n_params
    if spec.lora is not None:
        # Adapters, plus the embedding rows of added special tokens (they start untrained, so they must learn).
        added_rows = len(spec.special_tokens) * spec.model.d_model * (1 if spec.model.tie_embeddings else 2)
        trainable = lora_parameter_count(spec.model, spec.lora.targets, spec.lora.rank) + added_rows
    steps = spec.total_steps
    summary = {
        "task": spec.task,
        "n_params": n_params,
        "trainable_params": trainable,
        "trainable_fraction": round(trainable / n_params, 5),
        "vocab_size": spec.model.vocab_size,
        "added_embedding_params": new_rows,
        "seq_len": spec.seq_len,
        "tokens_per_step": spec.tokens_per_step,
        "grad_accum": spec.grad_accum,
        "warmup_steps": spec.optim.warmup,
        "total_steps": steps if steps else f"{spec.epochs} epochs of the train split",
        "device": spec.device,
        "precision": spec.precision,
    }
    if spec.lora is not None:
        summary["lora_targets"] = spec.lora.targets
    if spec.task == "classify":
        summary["pooling"] = spec.pooling
        summary["trainable_params"] = f"{trainable} + the classification head"
    return summary
