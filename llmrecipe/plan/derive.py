"""Derived values: computed once here, shown by `llmrecipe plan`, covered by the fingerprint.

Each function takes a step's user config (and what it needs from upstream configs) and returns the
resolved spec the executor runs with. Problems are returned as messages for the compiler to raise.
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

from llmrecipe.models.family import ShapeError, matches_target, round_up
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.plan import CheckpointFacts, Host
from llmrecipe.plan.specs import DataSpec, FinetuneSpec, ImportSpec, PreferenceSpec, PretrainSpec
from llmrecipe.recipe.finetune import CHAT_TASKS, CHAT_TEMPLATES, DEFAULT_BETA, FinetuneStep
from llmrecipe.recipe.import_step import ImportStep
from llmrecipe.recipe.pretrain import OptimConfig, PretrainStep
from llmrecipe.recipe.tokenizer import TokenizerStep


class DerivationError(ValueError):
    """A combination of settings that cannot work; the message names the fields and the fix."""


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def model_shape(step: PretrainStep, tokenizer: TokenizerStep) -> ModelShape:
    try:
        return family(step.model.arch).shape(step.model, tokenizer.vocab_size)
    except ShapeError as problem:
        raise DerivationError(str(problem)) from None


def parameter_count(shape: ModelShape) -> int:
    """Exactly the parameters of the built model (tests/test_models.py checks every family)."""
    return family(shape.arch).parameter_count(shape)


def flops_per_token(shape: ModelShape) -> int:
    """Training FLOPs per token: 6N for the matmuls plus 12·L·d·T for attention scores (PaLM, appendix B)."""
    return family(shape.arch).flops_per_token(shape)


def pretrain_spec(step: PretrainStep, tokenizer: TokenizerStep, device: str, host: Host, seed: int, nproc: int = 1) -> PretrainSpec:
    shape = model_shape(step, tokenizer)
    controls = training_controls(step, shape, shape.seq_len, _batch_size(step, shape), device, host, seed, nproc)
    return PretrainSpec(model=shape, final_eval_batches=step.final_eval_batches, **controls)


def training_controls(step: PretrainStep | FinetuneStep, shape: ModelShape, seq_len: int, batch_size: int, device: str,
                      host: Host, seed: int, nproc: int) -> dict[str, Any]:
    """The TrainingSpec fields every training step derives alike: the batch split over processes and micro-batches,
    the budget in steps, the warmup, the precision and the compile choice."""
    if batch_size % nproc:
        raise DerivationError(
            f"batch_size = {batch_size} examples do not split evenly over {nproc} processes (run.nproc or the "
            f"torchrun launch); pick a batch size that is a multiple of {nproc}"
        )
    if device == "cuda" and host.local_processes(nproc) > host.gpus:
        raise DerivationError(
            f"{host.local_processes(nproc)} training processes on this machine, but it has {host.gpus} visible "
            f"GPU(s); launch at most one process per GPU (run.nproc, or torchrun --nproc-per-node)"
        )
    share = batch_size // nproc
    micro = step.micro_batch_size or share
    if share % micro:
        who = f"batch_size = {batch_size}" if nproc == 1 else f"each process's share of {share} examples"
        raise DerivationError(
            f"{who} is not a multiple of micro_batch_size = {micro}; gradient accumulation needs whole micro-batches"
        )
    tokens_per_step = batch_size * seq_len
    budget = step.budget
    total_steps = budget.steps or (math.ceil(budget.tokens / tokens_per_step) if budget.tokens else None)
    optim = _resolved_warmup(step, total_steps)
    if total_steps is not None and optim.warmup >= total_steps:
        raise DerivationError(
            f"optim.warmup = {optim.warmup} steps is not shorter than the whole run ({total_steps} steps); "
            "lower the warmup or raise the budget"
        )
    precision = _precision(step.precision, device, host, shape.d_model)
    train_flops = family(shape.arch).flops_per_token(shape) * tokens_per_step * total_steps if total_steps else None
    compiled, reason = compile_choice(step.compile, device, host, precision, train_flops)
    return dict(
        optim=OptimConfig.model_validate(optim.model_dump()), batch_size=batch_size, micro_batch_size=micro,
        grad_accum=share // micro, tokens_per_step=tokens_per_step, total_steps=total_steps, epochs=budget.epochs,
        eval_every=step.eval_every, eval_batches=step.eval_batches,
        early_stopping_patience=step.early_stopping_patience, on_nonfinite=step.on_nonfinite,
        activation_checkpointing=step.activation_checkpointing, checkpoint_every=step.checkpoint_every,
        log_every=step.log_every, tensorboard=step.tensorboard, device=device, precision=precision,
        compile=compiled, compile_reason=reason, nproc=nproc, sharding=step.sharding, seed=seed,
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


def _resolved_warmup(step: PretrainStep | FinetuneStep, total_steps: int | None):
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


def import_spec(step: ImportStep, facts: CheckpointFacts, device: str, host: Host) -> ImportSpec:
    dtype = step.dtype if step.dtype != "auto" else ("bf16" if facts.stored_dtype == "bf16" else "fp32")
    if dtype == "bf16" and device == "cpu" and not host.cpu_bf16:
        raise DerivationError("dtype = 'bf16': this machine's CPU has no bf16 arithmetic (AVX512-BF16 or AMX), so "
                              "bf16 weights would compute slowly and in emulation; use dtype = 'fp32' (or a GPU)")
    return ImportSpec(model=facts.shape, dtype=dtype, folder=facts.folder, eot_token=facts.eot_token)


def import_summary(spec: ImportSpec, facts: CheckpointFacts) -> dict[str, Any]:
    """What `llmrecipe plan` shows for an import: the architecture, its size, context and dtype."""
    shape = spec.model
    return {
        "architecture": f"{shape.hf_model_type} -> {shape.arch}", "n_params": parameter_count(shape),
        "context": shape.seq_len, "dtype": spec.dtype, "stored_dtype": facts.stored_dtype,
        "n_layer": shape.n_layer, "d_model": shape.d_model, "heads": f"{shape.n_head} (kv {shape.n_kv_head})",
        "vocab_size": shape.vocab_size, "tokenizer_ids": facts.tokens,
        "chat_template": facts.chat_template is not None,
        **({"rope_scaling": "llama3"} if shape.rope_scaling else {}),
        **({"n_decoder_layer": shape.n_decoder_layer, "sentinels": shape.sentinels} if shape.n_decoder_layer else {}),
    }


def pretrain_summary(spec: PretrainSpec) -> dict[str, Any]:
    """The derived numbers a user wants to see before committing hours of compute."""
    n_params = parameter_count(spec.model)
    flops = flops_per_token(spec.model)
    steps = spec.total_steps
    return {
        "head_dim": spec.model.head_dim,
        "ffn_hidden": spec.model.ffn_hidden,
        "vocab_size": spec.model.vocab_size,
        **family(spec.model.arch).derived(spec.model),
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
        **_execution(spec),
    }


def _execution(spec: PretrainSpec | FinetuneSpec) -> dict[str, Any]:
    return {"device": spec.device, "precision": spec.precision, "compile": spec.compile,
            "compile_reason": spec.compile_reason, "processes": spec.nproc,
            **({"sharding": spec.sharding} if spec.nproc > 1 else {})}


def data_summary(spec: DataSpec) -> dict[str, Any]:
    """Per dedup_near op: its LSH banding (bands x rows), where the banding's S-curve puts the similarity at which
    a pair becomes a candidate (so a threshold the banding cannot reach shows before the run), the chance that a
    pair exactly at the threshold is compared at all, and how compared pairs are judged. Each is a probability or
    an estimate, and says so."""
    found: dict[str, Any] = {}
    for index, op in enumerate(spec.ops):
        if op.op != "dedup_near":
            continue
        rows = op.num_perm // op.bands
        # A pair of Jaccard similarity s shares at least one band with probability 1 - (1 - s^rows)^bands;
        # the curve is steepest near (1 / bands)^(1 / rows).
        found[f"ops[{index}].lsh_bands_x_rows"] = f"{op.bands} x {rows}"
        found[f"ops[{index}].lsh_threshold_estimate"] = round((1 / op.bands) ** (1 / rows), 3)
        compared = 1 - (1 - op.threshold**rows) ** op.bands
        found[f"ops[{index}].chance_a_pair_at_threshold_is_compared"] = \
            "over 99.99%" if compared > 0.9999 else f"{compared:.2%}"
        found[f"ops[{index}].compared_pairs_judged_by"] = (
            "exact shingle Jaccard (verify = true)" if op.verify else
            f"MinHash estimate, typical error +-{1 / op.num_perm ** 0.5:.2f}; verify = true judges by exact Jaccard")
    return found


CPU_BF16_MIN_WIDTH = 192
"""On a CPU, bf16 autocast pays only from this model width up: below it the casts cost more than the faster
matmuls save (measured here: a 4-layer GPT-2 trains 0.88x as fast in bf16 at width 128, 1.18x at 192)."""


def _precision(choice: str, device: str, host: Host, d_model: int | None = None) -> str:
    if choice != "auto":
        return choice
    bf16_is_fast = device == "cuda" or (host.cpu_bf16 and (d_model is None or d_model >= CPU_BF16_MIN_WIDTH))
    return "bf16" if bf16_is_fast else "fp32"


COLD_COMPILE_SECONDS = 60.0
"""What a cold torch.compile of a training step costs on a CPU (measured here: 36-75 s for 6-layer models)."""
COMPILE_PAYS_AT = 5.0
"""`compile = "auto"` compiles on a CPU when eager training is estimated to take this many cold compiles: a
compiled model was measured 1.2-1.5x faster, so the saving then clearly exceeds the compile's cost."""
EAGER_MFU = 0.3
"""The share of the measured matmul peak that eager CPU training reaches, for the estimate (measured here:
0.22-0.25 in bf16, 0.55-0.6 in fp32 at width 384; small models reach less, so the estimate errs short and `auto`
compiles only runs that are clearly long)."""
NOMINAL_CORE_FLOPS = {"fp32": 100e9, "bf16": 400e9}
"""Matmul FLOP/s per core assumed before a training run has measured this machine's peak (measured here: 111 per
core in fp32, 540 in bf16 on AMX cores)."""


def compile_choice(choice: str, device: str, host: Host, precision: str, train_flops: int | None) -> tuple[bool, str]:
    """Whether to torch.compile the model, and why (`llmrecipe plan` shows both)."""
    if choice != "auto":
        return choice == "on", f"compile = '{choice}' in the recipe"
    if device == "cuda":
        return True, "CUDA: compiled kernels fuse the pointwise work that eager mode launches one kernel at a time"
    if train_flops is None:
        return False, "an epoch budget's length is known only when training starts; set compile = 'on' for long runs"
    measured = host.matmul_peak.get(f"cpu/{precision}")
    rate = NOMINAL_CORE_FLOPS["bf16" if precision == "bf16" and host.cpu_bf16 else "fp32"] * host.cpu_cores
    peak = measured or rate
    seconds = train_flops / (peak * EAGER_MFU)
    pays = seconds >= COMPILE_PAYS_AT * COLD_COMPILE_SECONDS
    source = "measured" if measured else "nominal (measured by the first training run)"
    return pays, (f"eager training estimated at {_duration(seconds)} ({EAGER_MFU:.0%} of a {peak / 1e9:,.0f} GFLOP/s "
                  f"{source} {precision} peak): {'at least' if pays else 'under'} {COMPILE_PAYS_AT:g}x a cold "
                  f"compile (~{COLD_COMPILE_SECONDS:.0f} s)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def lora_parameter_count(shape: ModelShape, targets: list[str], rank: int) -> int:
    """Adapter parameters: rank x (in + out) per adapted linear layer (A is rank x in, B is out x rank)."""
    layers = family(shape.arch).linear_layers(shape)
    return sum(rank * (i + o) for name, (i, o) in layers.items() if any(matches_target(name, t) for t in targets))


def finetune_spec(step: FinetuneStep, init: ModelShape, token_bound: int, device: str, host: Host, seed: int,
                  dataset_file: str | None, nproc: int = 1,
                  own_template: tuple[str, str | None] | None = None) -> FinetuneSpec:
    """`init` is the starting model's shape, `token_bound` an upper bound of its tokenizer's ids, `own_template` the
    chat template an imported init model brings and its end-of-turn token."""
    arch = family(init.arch)
    if step.task != "seq2seq" and arch.encoder_decoder:
        raise DerivationError(f"task = '{step.task}' trains a single-stack model; the init model is a `{init.arch}` "
                              "encoder-decoder: use task = 'seq2seq' (text in, text out)")
    if step.task == "seq2seq" and not arch.encoder_decoder:
        raise DerivationError(f"task = 'seq2seq' trains an encoder-decoder (`t5`); the init model is a "
                              f"`{init.arch}`: use task = 'sft' for prompt/response pairs")
    if step.task in ("sft", "continue", "preference") and not arch.causal:
        raise DerivationError(f"task = '{step.task}' trains a decoder that reads left to right; the init model is a "
                              f"`{init.arch}`, which sees both sides")
    if step.task == "classify" and step.pooling == "first" and arch.causal:
        raise DerivationError(f"pooling = 'first' on a `{init.arch}` decoder: its first state sees only the first "
                              "token, so every text would look alike; use 'last' (or 'auto')")
    template, specials, end_of_turn = _chat_template(step, own_template)
    added = len(specials) if step.task in CHAT_TASKS else 0  # an upper bound: tokens the tokenizer has already are kept
    # Rows only when the added tokens need them: an imported checkpoint keeps its exact vocabulary size.
    rows = init.vocab_size if token_bound + added <= init.vocab_size else round_up(token_bound + added, 64)
    model = init.model_copy(update={"vocab_size": rows})
    seq_len = step.max_seq_len or init.seq_len
    if seq_len > init.seq_len:
        raise DerivationError(f"max_seq_len = {seq_len} is longer than the init model's seq_len = {init.seq_len}; "
                              f"pick at most {init.seq_len}")
    dataset = step.dataset.model_copy(update={"path": posixpath.basename(step.dataset.path)}) if step.dataset else None
    return FinetuneSpec(
        task=step.task, init_model=init, model=model, dataset=dataset, dataset_file=dataset_file,
        chat_template=template, special_tokens=specials, end_of_turn=end_of_turn, seq_len=seq_len,
        truncation=step.truncation,
        labels=step.labels, class_weighting=step.class_weighting,
        pooling=("last" if arch.causal else "first") if step.pooling == "auto" else step.pooling,
        lora=_resolved_lora(step, model), preference=_preference(step),
        # a preference example is a pair: two sequences of up to seq_len tokens each
        **training_controls(step, model, seq_len * (2 if step.task == "preference" else 1), step.batch_size, device,
                            host, seed, nproc),
    )


def _preference(step: FinetuneStep) -> PreferenceSpec | None:
    if step.task != "preference":
        return None
    beta = step.beta if step.beta is not None else DEFAULT_BETA[step.method]
    return PreferenceSpec(method=step.method, beta=beta, gamma=step.gamma if step.method == "simpo" else 0.0)


def _chat_template(step: FinetuneStep, own: tuple[str, str | None] | None) -> tuple[str | None, list[str], str | None]:
    if step.task not in CHAT_TASKS:
        return None, [], None
    if step.chat_template is not None:
        return step.chat_template, list(step.special_tokens), step.end_of_turn
    if step.template is None and own is not None:
        text, end_of_turn = own
        if end_of_turn is None:
            raise DerivationError("the init model's chat template comes without an end-of-sequence token to end a "
                                  "turn; give template = \"chatml\" or an inline chat_template with end_of_turn")
        return text, [], end_of_turn  # its tokens are in its tokenizer already
    return CHAT_TEMPLATES[step.template or "chatml"]


def _resolved_lora(step: FinetuneStep, shape: ModelShape):
    if step.lora is None:
        return None
    arch = family(shape.arch)
    if not arch.lora_targets:
        raise DerivationError(f"lora: adapters fit the attention projections of transformer models, not "
                              f"`{shape.arch}`; remove [lora]")
    targets = step.lora.targets or list(arch.lora_targets)
    names = arch.linear_layers(shape)
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
        **_execution(spec),
    }
    if spec.lora is not None:
        summary["lora_targets"] = spec.lora.targets
    if spec.preference is not None:
        summary.update(_preference_summary(spec))
    if spec.task == "classify":
        summary["pooling"] = spec.pooling
        summary["trainable_params"] = f"{trainable} + the classification head"
    return summary


def _preference_summary(spec: FinetuneSpec) -> dict[str, Any]:
    """The objective as it will run, and where its reference comes from."""
    preference = spec.preference
    summary: dict[str, Any] = {"method": preference.method, "beta": preference.beta}
    if preference.method == "simpo":
        summary["gamma"] = preference.gamma
        summary["reference"] = "none (SimPO)"
    else:
        starting = "the starting model with its adapters off" if spec.lora is not None else "the starting model"
        summary["reference"] = f"{starting}: log-probs computed once before training"
    return summary
