"""Multiple choice by log-likelihood, as lm-evaluation-harness's `multiple_choice` tasks score it.

Each choice is scored as the continuation `delimiter + choice` of the context. `accuracy` takes the
choice with the highest summed log-likelihood; `accuracy_norm` divides each sum by the choice's length
in characters first (the harness's `acc_norm`), which removes the bias toward short answers. Ties go to
the first choice (numpy's argmax), as in the harness.
"""

from __future__ import annotations

import numpy as np

from llmrecipe.evals.jsonl import check_choices, read_jsonl, required_keys, suite_key
from llmrecipe.evals.loglikelihood import cut_requests, encode_pair, score_requests
from llmrecipe.evals.stats import Metric
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, progress_bar, proportion
from llmrecipe.recipe.evaluate import MultipleChoiceSuite

METRICS = {
    "accuracy": proportion("correct"),
    "accuracy_norm": proportion("correct_norm"),
    "chance": Metric(lambda sums: sums["chance"] / sums["count"], higher_is_better=True, compared=False),
}


def run(config: MultipleChoiceSuite, env: SuiteEnv) -> SuiteResult:
    rows = read_jsonl(env.data_path, *required_keys(config, suite_key(env.ctx.name, env.name)), limit=config.limit)
    check_choices(rows, env.data_path.name)
    examples, cut = score_choices(rows, config.delimiter, env)
    columns = {
        "correct": np.array([e["prediction"] == e["answer"] for e in examples], dtype=np.float64),
        "correct_norm": np.array([e["prediction_norm"] == e["answer"] for e in examples], dtype=np.float64),
        "chance": np.array([1.0 / len(row["choices"]) for row in rows]),
        "count": np.ones(len(rows)),
    }
    return SuiteResult(columns=columns, examples=examples, worst=confident_mistakes(examples, env.worst),
                       extra={"contexts_cut": cut})


def score_choices(rows: list[dict], delimiter: str, env: SuiteEnv) -> tuple[list[dict], int]:
    """`rank_choices` of every row ({"context", "choices", "answer"}), each choice scored as the continuation
    `delimiter + choice`; and how many (context, choice) requests lost the start of their context to the window."""
    requests = [
        encode_pair(env.tokenizer, row["context"], delimiter + choice, env.eot_id)
        for row in rows
        for choice in row["choices"]
    ]
    progress = progress_bar(env, len(requests), "choices")
    log_likelihoods, _ = score_requests(env.model, requests, env.batch_size, env.device, progress.advance, env.eot_id)
    progress.close()
    examples, offset = [], 0
    for row in rows:
        scores = log_likelihoods[offset : offset + len(row["choices"])]
        offset += len(row["choices"])
        examples.append(rank_choices(row, scores))
    return examples, cut_requests(requests, env.model.shape.seq_len)


def rank_choices(row: dict, log_likelihoods: np.ndarray) -> dict:
    """The harness's `process_results` for one example, plus the model's probabilities over the choices."""
    lengths = np.array([float(len(choice)) for choice in row["choices"]])
    probabilities = np.exp(log_likelihoods - log_likelihoods.max())
    probabilities /= probabilities.sum()
    return {
        "context": row["context"],
        "choices": row["choices"],
        "answer": row["answer"],
        "log_likelihoods": log_likelihoods.tolist(),
        "prediction": int(np.argmax(log_likelihoods)),
        "prediction_norm": int(np.argmax(log_likelihoods / np.maximum(lengths, 1.0))),
        "confidence": float(probabilities.max()),
    }


def confident_mistakes(examples: list[dict], k: int) -> list[dict]:
    """Wrong answers the model was surest of (probability of its choice among the choices), surest first."""
    wrong = [e for e in examples if e["prediction"] != e["answer"]]
    wrong.sort(key=lambda e: -e["confidence"])
    return [
        {
            "context": e["context"],
            "answer": e["choices"][e["answer"]],
            "predicted": e["choices"][e["prediction"]],
            "confidence": round(e["confidence"], 4),
        }
        for e in wrong[:k]
    ]
