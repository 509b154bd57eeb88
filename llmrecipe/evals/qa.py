"""Closed-book QA with a closed answer set: how often the model is right, wrong (a hallucination) or abstains.

The reference starts with its answer (StrategyQA: `Yes. Frost is common in December ...`). The model's
generation is an answer when, normalized like SQuAD answers, it starts with one of the answers as whole
words; anything else ("I am not sure", an unrelated sentence, nothing) is an abstention. So
accuracy + hallucination rate + abstention rate = 1, and a model that declines to answer is not
counted as making things up.
"""

from __future__ import annotations

import numpy as np

from llmrecipe.errors import StepError
from llmrecipe.evals.generation import generate_all
from llmrecipe.evals.jsonl import read_jsonl, required_keys, suite_key
from llmrecipe.evals.stats import Metric
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, proportion
from llmrecipe.evals.text_metrics import normalize_answer
from llmrecipe.recipe.evaluate import QaFactualitySuite

METRICS = {
    "accuracy": proportion("correct"),
    "hallucination_rate": Metric(lambda sums: sums["wrong"] / sums["count"], higher_is_better=False),
    "abstention_rate": Metric(lambda sums: sums["abstained"] / sums["count"], higher_is_better=False),
    "answered_accuracy": Metric(
        lambda sums: sums["correct"] / (sums["correct"] + sums["wrong"]) if sums["correct"] + sums["wrong"] else float("nan"),
        higher_is_better=True,
    ),
}


def run(config: QaFactualitySuite, env: SuiteEnv) -> SuiteResult:
    rows = read_jsonl(env.data_path, *required_keys(config, suite_key(env.ctx.name, env.name)), limit=config.limit)
    wanted = []
    for number, row in enumerate(rows, start=1):
        answer = leading_answer(row[config.reference_field], config.answers)
        if answer is None:
            raise StepError(
                f"{env.data_path.name} example {number}: the reference does not start with any of the answers "
                f"{config.answers}; set `answers` to the answer words the references start with"
            )
        wanted.append(answer)
    prompts = [config.template.replace("{prompt}", row[config.prompt_field]) for row in rows]
    generations, cut = generate_all(env, prompts, config.decoding)
    given = [leading_answer(text, config.answers) for text in generations]
    examples = [
        {"question": row[config.prompt_field], "reference": answer, "generation": text, "answer": got}
        for row, answer, text, got in zip(rows, wanted, generations, given)
    ]
    columns = {
        "correct": np.array([g == w for g, w in zip(given, wanted)], dtype=np.float64),
        "wrong": np.array([g is not None and g != w for g, w in zip(given, wanted)], dtype=np.float64),
        "abstained": np.array([g is None for g in given], dtype=np.float64),
        "count": np.ones(len(rows)),
    }
    hallucinations = [e for e in examples if e["answer"] is not None and e["answer"] != e["reference"]]
    return SuiteResult(columns=columns, examples=examples, worst=hallucinations[: env.worst],
                       extra={"prompts_cut": cut})


def leading_answer(text: str, answers: list[str]) -> str | None:
    """The answer `text` starts with (normalized, whole words), or None; the longest answer wins a tie."""
    words = normalize_answer(text).split()
    for answer in sorted(answers, key=lambda a: -len(normalize_answer(a).split())):
        answer_words = normalize_answer(answer).split()
        if answer_words and words[: len(answer_words)] == answer_words:
            return answer
    return None
