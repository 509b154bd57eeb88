"""Generated answers against references: exact match, token F1, ROUGE-L, and sacrebleu's corpus BLEU and chrF."""

from __future__ import annotations

from dataclasses import dataclass

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
from llmrecipe.recipe.evaluate import DecodingConfig, GenerationSuite, SemanticSimilaritySuite

BLEU_COLUMNS = [f"bleu_{i}" for i in range(10)]
CHRF_COLUMNS = [f"chrf_{i}" for i in range(18)]


METRICS = {
    "exact_match": mean("exact_match"),
    "f1": mean("f1"),
    "rouge_l": mean("rouge_l"),
    "bleu": Metric(lambda sums: bleu_from_statistics([sums[c] for c in BLEU_COLUMNS]), higher_is_better=True),
    "chrf": Metric(lambda sums: chrf_from_statistics([sums[c] for c in CHRF_COLUMNS]), higher_is_better=True),
}


@dataclass
class Answers:
    """A suite's generated answers with their references, and each example as the report shows it."""

    references: list[str]
    predictions: list[str]
    examples: list[dict]
    prompts_cut: int
    """Prompts too long for the context that kept only their end."""


def answer_prompts(config: GenerationSuite | SemanticSimilaritySuite, env: SuiteEnv) -> Answers:
    """The suite file's prompts (through the suite's template) answered by the model, beside their references."""
    rows = read_jsonl(env.data_path, *required_keys(config, suite_key(env.ctx.name, env.name)), limit=config.limit)
    prompts = [config.template.replace("{prompt}", row[config.prompt_field]) for row in rows]
    references = [row[config.reference_field] for row in rows]
    predictions, cut = generate_all(env, prompts, config.decoding)
    examples = [
        {"prompt": row[config.prompt_field], "reference": reference, "prediction": prediction}
        for row, reference, prediction in zip(rows, references, predictions)
    ]
    return Answers(references, predictions, examples, cut)


def run(config: GenerationSuite, env: SuiteEnv) -> SuiteResult:
    answers = answer_prompts(config, env)
    columns = text_columns(answers.predictions, answers.references)
    order = np.lexsort((columns["rouge_l"], columns["f1"]))[: env.worst]  # lowest F1 first, then lowest ROUGE-L
    worst = [{**answers.examples[i], "f1": round(float(columns["f1"][i]), 4)} for i in order]
    return SuiteResult(columns=columns, examples=answers.examples, worst=worst,
                       extra={"prompts_cut": answers.prompts_cut})


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
