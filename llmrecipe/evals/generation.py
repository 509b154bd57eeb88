"""Generated answers against references: exact match, token F1, ROUGE-L, and sacrebleu's corpus BLEU and chrF."""

from __future__ import annotations

import numpy as np

from llmrecipe.evals.decoding import complete, prompt_is_cut, suite_engine
from llmrecipe.evals.jsonl import read_jsonl, required_keys, suite_key
from llmrecipe.evals.stats import Metric
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, mean, progress_bar
from llmrecipe.evals.text_metrics import (
    bleu_from_statistics,
    bleu_statistics,
    chrf_from_statistics,
    chrf_statistics,
    exact_match,
    rouge_l,
    token_f1,
)
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.recipe.evaluate import DecodingConfig, GenerationSuite

BLEU_COLUMNS = [f"bleu_{i}" for i in range(10)]
CHRF_COLUMNS = [f"chrf_{i}" for i in range(18)]


METRICS = {
    "exact_match": mean("exact_match"),
    "f1": mean("f1"),
    "rouge_l": mean("rouge_l"),
    "bleu": Metric(lambda sums: bleu_from_statistics([sums[c] for c in BLEU_COLUMNS]), higher_is_better=True),
    "chrf": Metric(lambda sums: chrf_from_statistics([sums[c] for c in CHRF_COLUMNS]), higher_is_better=True),
}


def run(config: GenerationSuite, env: SuiteEnv) -> SuiteResult:
    rows = read_jsonl(env.data_path, *required_keys(config, suite_key(env.ctx.name, env.name)), limit=config.limit)
    prompts = [config.template.replace("{prompt}", row[config.prompt_field]) for row in rows]
    references = [row[config.reference_field] for row in rows]
    predictions, cut = generate_all(env, prompts, config.decoding)
    columns = text_columns(predictions, references)
    examples = [
        {"prompt": row[config.prompt_field], "reference": reference, "prediction": prediction}
        for row, reference, prediction in zip(rows, references, predictions)
    ]
    order = np.lexsort((columns["rouge_l"], columns["f1"]))[: env.worst]  # lowest F1 first, then lowest ROUGE-L
    worst = [{**examples[i], "f1": round(float(columns["f1"][i]), 4)} for i in order]
    return SuiteResult(columns=columns, examples=examples, worst=worst, extra={"prompts_cut": cut})


def text_columns(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per-example scores and sacrebleu statistics; their sums give every metric in METRICS."""
    columns = {
        "exact_match": np.array([exact_match(p, r) for p, r in zip(predictions, references)]),
        "f1": np.array([token_f1(p, r) for p, r in zip(predictions, references)]),
        "rouge_l": np.array([rouge_l(p, r) for p, r in zip(predictions, references)]),
        "count": np.ones(len(predictions)),
    }
    bleu, chrf = bleu_statistics(predictions, references), chrf_statistics(predictions, references)
    columns.update({name: bleu[:, i] for i, name in enumerate(BLEU_COLUMNS)})
    columns.update({name: chrf[:, i] for i, name in enumerate(CHRF_COLUMNS)})
    return columns


def generate_all(env: SuiteEnv, prompts: list[str], decoding: DecodingConfig) -> tuple[list[str], int]:
    """The answer to each prompt: decoded until the end-of-text token, a stop string or `max_new_tokens`, cut before
    the stop string and stripped. Prompt i samples with seed + i. Also: how many prompts were too long for the
    context and kept only their end."""
    engine = suite_engine(env)
    progress = progress_bar(env, len(prompts), "prompts")
    answers, cut = [], 0
    for number, prompt in enumerate(prompts):
        params = SamplingParams(max_tokens=decoding.max_new_tokens, temperature=decoding.temperature,
                                top_k=decoding.top_k, stop=tuple(s for s in decoding.stop if s), seed=env.seed + number)
        prompt_ids = env.tokenizer.encode(prompt).ids or [env.eot_id]
        cut += prompt_is_cut(engine, prompt_ids, params)
        answers.append(complete(engine, prompt_ids, params).text.strip())
        progress.advance(1)
    progress.close()
    return answers, cut
