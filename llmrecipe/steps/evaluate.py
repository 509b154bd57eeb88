"""Executor of `evaluate`: held-out loss, perplexity, bits per byte and a unigram bar; sampled text to read.

Writes `results.json` (every number, per split, and the samples) and `samples.md` (the samples as text).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import torch

from llmrecipe.evals.perplexity import score_stream, unigram_baseline
from llmrecipe.evals.sampling import sample
from llmrecipe.models import load_trained
from llmrecipe.plan.specs import EvaluateSpec
from llmrecipe.run.context import StepContext
from llmrecipe.tokenizer.bytes import load_tokenizer, token_byte_lengths
from llmrecipe.training.batches import TokenFile
from llmrecipe.training.device import prepare_device


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = EvaluateSpec.model_validate(raw_spec)
    prepare_device(spec.device)
    model, _ = load_trained(ctx.inputs["model"], spec.device)
    tokenizer, tokenizer_meta = load_tokenizer(ctx.inputs["tokenizer"])
    tokens_dir = ctx.inputs["tokens"]
    meta = json.loads((tokens_dir / "meta.json").read_text())
    splits = {name: TokenFile(tokens_dir / f"{name}.bin", meta["dtype"]).tokens for name in spec.splits}

    results: dict[str, Any] = {"splits": {}, "samples": []}
    metrics: dict[str, Any] = {}
    if "perplexity" in spec.suites:
        byte_lengths = token_byte_lengths(tokenizer)
        train = TokenFile(tokens_dir / "train.bin", meta["dtype"]).tokens
        for name, tokens in splits.items():
            scores = evaluate_split(name, tokens, train, model, spec, byte_lengths, meta["vocab_size"], ctx)
            results["splits"][name] = scores
            metrics.update(flat_metrics(name, scores))
    if "samples" in spec.suites:
        eot_id, vocab_size = meta["eot_id"], tokenizer_meta["vocab_size"]
        results["samples"] = draw_samples(model, tokenizer, splits, spec, eot_id, vocab_size, ctx)
        (ctx.out_dir / "samples.md").write_text(samples_markdown(results["samples"], spec), encoding="utf-8")
        metrics["samples"] = len(results["samples"])
    (ctx.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return metrics


def evaluate_split(
    name: str,
    tokens: np.ndarray,
    train: np.ndarray,
    model: torch.nn.Module,
    spec: EvaluateSpec,
    byte_lengths: np.ndarray,
    vocab_size: int,
    ctx: StepContext,
) -> dict[str, Any]:
    """Scores of one held-out split, or {"empty": True} when it has nothing to predict."""
    if spec.max_tokens is not None:
        tokens = tokens[: spec.max_tokens + 1]  # the first token is only context: max_tokens targets
    if len(tokens) < 2:
        ctx.log(f"the {name} split has {len(tokens)} tokens, nothing to predict: reported as empty")
        return {"empty": True, "tokens": 0}
    progress = ctx.progress(total=len(tokens) - 1, unit="tokens")
    score = score_stream(
        model, tokens, model.shape.seq_len, spec.batch_size, byte_lengths, spec.device, on_batch=progress.advance
    )
    progress.close()
    return {
        "empty": False,
        "tokens": score.tokens,
        "bytes": score.bytes,
        "loss": score.loss,
        "perplexity": score.perplexity,
        # No byte-bearing token (a stream of special tokens only) leaves bits per byte undefined.
        "bits_per_byte": score.bits_per_byte if score.bytes else None,
        # Scored on the same targets as the model, so the two losses compare directly.
        "unigram_loss": unigram_baseline(train, tokens[1:], vocab_size),
    }


def flat_metrics(split: str, scores: dict[str, Any]) -> dict[str, Any]:
    """{"val_loss", "val_ppl", "val_bpb", "val_unigram_loss", "val_tokens"} for the run's metrics line."""
    if scores["empty"]:
        return {f"{split}_tokens": 0}
    return {
        f"{split}_loss": scores["loss"],
        f"{split}_ppl": scores["perplexity"],
        f"{split}_bpb": scores["bits_per_byte"],
        f"{split}_unigram_loss": scores["unigram_loss"],
        f"{split}_tokens": scores["tokens"],
    }


def draw_samples(
    model: torch.nn.Module,
    tokenizer: Any,
    splits: dict[str, np.ndarray],
    spec: EvaluateSpec,
    eot_id: int,
    vocab_size: int,
    ctx: StepContext,
) -> list[dict[str, Any]]:
    """`spec.samples.count` continuations of the starts of held-out documents, chosen and sampled from spec.seed."""
    config = spec.samples
    source = next((name for name, tokens in splits.items() if len(tokens)), None)
    if config.count == 0 or source is None:
        ctx.log("no held-out tokens to take prompts from: no samples" if config.count else "samples.count = 0")
        return []
    prompts = document_prompts(splits[source], eot_id, config.prompt_tokens, config.count, spec.seed)
    generator = torch.Generator(device=spec.device).manual_seed(spec.seed)
    samples = []
    for start, prompt_ids in prompts:
        new_ids = sample(
            model, prompt_ids, config.max_new_tokens, config.temperature, config.top_k, generator,
            eot_id=eot_id, vocab_size=vocab_size,
        )
        samples.append(
            {
                "split": source,
                "document_start": start,
                "prompt": tokenizer.decode(prompt_ids, skip_special_tokens=False),
                "continuation": tokenizer.decode(new_ids, skip_special_tokens=False),
                "prompt_ids": prompt_ids,
                "continuation_ids": new_ids,
            }
        )
    return samples


def document_prompts(
    tokens: np.ndarray, eot_id: int, prompt_tokens: int, count: int, seed: int
) -> list[tuple[int, list[int]]]:
    """(offset, first `prompt_tokens` ids) of up to `count` documents picked at random, in stream order.

    A document starts at offset 0 and after every end-of-text token; empty documents are skipped and a
    prompt never runs into the next document.
    """
    starts = np.concatenate([[0], np.flatnonzero(tokens == eot_id) + 1])
    starts = [int(s) for s in starts if s < len(tokens) and tokens[s] != eot_id]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(starts), size=min(count, len(starts)), replace=False).tolist()) if starts else []
    prompts = []
    for index in chosen:
        head = [int(t) for t in tokens[starts[index] : starts[index] + prompt_tokens]]
        prompts.append((starts[index], head[: head.index(eot_id)] if eot_id in head else head))
    return prompts


def samples_markdown(samples: list[dict[str, Any]], spec: EvaluateSpec) -> str:
    config = spec.samples
    lines = [
        "# Samples",
        "",
        f"Prompts: the first {config.prompt_tokens} tokens of held-out documents. Sampling: temperature "
        f"{config.temperature}, top_k {config.top_k}, up to {config.max_new_tokens} new tokens, seed {spec.seed}.",
        "",
    ]
    if not samples:
        lines += ["No samples: there were no held-out documents to take prompts from.", ""]
    for number, item in enumerate(samples, start=1):
        lines += [f"## Sample {number} ({item['split']} document at token {item['document_start']})", ""]
        lines += ["Prompt:", "", *fenced(item["prompt"]), "", "Continuation:", "", *fenced(item["continuation"]), ""]
    return "\n".join(lines)


def fenced(text: str) -> list[str]:
    """A code block that shows `text` verbatim: the fence is longer than any run of backticks inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]
