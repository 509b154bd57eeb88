"""The `samples` suite: continuations sampled from the starts of held-out documents, to read (samples.md)."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from llmrecipe.evals.decoding import complete, prompt_is_cut, suite_engine
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.evals.suite import SuiteEnv, SuiteResult
from llmrecipe.recipe.evaluate import SamplesSuite
from llmrecipe.training.tasks.windows import TokenFile

METRICS: dict = {}
"""Samples are for reading: nothing to average."""


def run(config: SamplesSuite, env: SuiteEnv) -> SuiteResult:
    meta = json.loads((env.tokens_dir / "meta.json").read_text())
    splits = {name: TokenFile(env.tokens_dir / f"{name}.bin", meta["dtype"]).tokens for name in ("val", "test")}
    source = next((name for name, tokens in splits.items() if len(tokens)), None)
    if config.count == 0 or source is None:
        note = "no held-out tokens to take prompts from: no samples" if config.count else "count = 0"
        return SuiteResult({}, [], [], extra={"count": 0}, note=note)
    prompts = document_prompts(splits[source], env.eot_id, config.prompt_tokens, config.count, env.seed)
    engine = suite_engine(env)
    samples, cut = [], 0
    for number, (start, prompt_ids) in enumerate(prompts):
        params = SamplingParams(max_tokens=config.max_new_tokens, temperature=config.temperature, top_k=config.top_k,
                                seed=env.seed + number)
        cut += prompt_is_cut(engine, prompt_ids, params)
        new_ids = complete(engine, prompt_ids, params).token_ids
        samples.append(
            {
                "split": source,
                "document_start": start,
                "prompt": env.tokenizer.decode(prompt_ids, skip_special_tokens=False),
                "continuation": env.tokenizer.decode(new_ids, skip_special_tokens=False),
                "prompt_ids": prompt_ids,
                "continuation_ids": new_ids,
            }
        )
    (env.out_dir / "samples.md").write_text(samples_markdown(samples, config, env.seed), encoding="utf-8")
    return SuiteResult({}, samples, [], extra={"count": len(samples), "prompts_cut": cut})


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


def samples_markdown(samples: list[dict[str, Any]], config: SamplesSuite, seed: int) -> str:
    lines = [
        "# Samples",
        "",
        f"Prompts: the first {config.prompt_tokens} tokens of held-out documents. Sampling: temperature "
        f"{config.temperature}, top_k {config.top_k}, up to {config.max_new_tokens} new tokens, seed {seed}.",
        "",
    ]
    for number, item in enumerate(samples, start=1):
        lines += [f"## Sample {number} ({item['split']} document at token {item['document_start']})", ""]
        lines += ["Prompt:", "", *fenced(item["prompt"]), "", "Continuation:", "", *fenced(item["continuation"]), ""]
    return "\n".join(lines)


def fenced(text: str) -> list[str]:
    """A code block that shows `text` verbatim: the fence is longer than any run of backticks inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]
